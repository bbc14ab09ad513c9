"""Keras' own per-type attribute cache for saving and loading, filled for a ``with`` block only.

Every ``.keras`` save and load and every ``save_weights`` / ``load_weights`` walks the model's object graph, and for
each object Keras asks ``keras.src.saving.saving_lib.get_attr_skipset(type)`` for the attributes to skip. That
function is meant to compute each set once and cache it in Keras' global state, but in Keras 3.15 it reads the cache
under one key (``saving_attr_skiplist_<type>``) and writes it under another (``saving_attr_skipset_<type>``): the cache
never hits, and every object of the walk builds a throwaway ``Layer()`` and lists its attributes again. That is about a
third of a save (the tiny test model: 0.21 -> 0.14 s; the paper's 8-stack model: 2.4 -> 1.6 s for ``model.save``,
2.2 -> 1.6 s for ``save_weights`` with an RMSprop optimizer; docs/performance.md).

``saving_cache()`` computes each set once, with Keras' own function, and stores it under the key Keras reads, for the
``with`` block only: on exit the previous values (normally none) are back, so importing or using the package leaves
Keras as it was. The sets are exactly what Keras would compute on each call (Keras derives them from fresh default
objects, never from the object being saved), so the files written are the same.
``tests/test_metadata.py::test_the_saving_cache_is_keras_own_sets_for_the_block_only`` fails when a Keras upgrade
fixes the key (then this module can go) or changes the function.
"""

import contextlib

# The object types Keras' saving walks meet in this package's models, optimizers, losses and metrics
# (``KerasSaveable._obj_type``); "Cross" and "Feature" (keras.utils.FeatureSpace) are left to Keras.
TYPES = ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss")
READ_KEY = "saving_attr_skiplist_{}"  # the key Keras 3.15's get_attr_skipset reads


@contextlib.contextmanager
def saving_cache():
    """Within the block, Keras' saving and loading find each type's skip set cached (see the module docstring).

    Keras keeps its global state per thread: the cache holds for the calling thread (where ``fit`` runs its
    callbacks). Nested blocks are fine; each restores what it found.
    """
    from keras.src.backend.common import global_state
    from keras.src.saving import saving_lib

    keys = [READ_KEY.format(t) for t in TYPES]
    previous = [global_state.get_global_attribute(key) for key in keys]
    try:
        for obj_type, key, before in zip(TYPES, keys, previous, strict=True):
            if before is None:
                global_state.set_global_attribute(key, saving_lib.get_attr_skipset(obj_type))
        yield
    finally:
        for key, before in zip(keys, previous, strict=True):
            global_state.set_global_attribute(key, before)
