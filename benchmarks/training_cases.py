"""Training-step cases: seconds per compiled RMSprop step (the ``model.fit`` step), its first (tracing) step and
GFLOP/s, per stack count and variant (``TRAIN_VARIANTS``)."""

import time

import numpy as np

from benchmarks.measure import median_seconds

TRAIN_VARIANTS = ("plain", "stock_batch_norm", "xla", "mixed_precision")


def compiled_training_model(
    num_stacks,
    filters=256,
    input_size=256,
    batch_size=8,
    num_joints=16,
    jit_compile=False,
    fused_batch_norm=True,
    recompute=False,
    recompute_preactivations=True,
):
    """A seeded stacked hourglass compiled with RMSprop and per-stack MSE, and one random batch for it.

    ``fused_batch_norm`` trains batch norm with TF's fused kernel, as ``scripts/train.py`` does by default
    (``hourglass_tf.batchnorm``); False keeps Keras' own element-wise computation. ``recompute``: the stem and
    each stack recomputed in the backward pass (``hourglass_tf.recompute``, ``train.py --recompute``).
    ``recompute_preactivations``: each convolution's batch norm -> ReLU input recomputed in the backward pass
    (``hourglass_tf.preactivation``), as ``train.py`` does by default.

    Returns:
      (model, images (B, R, R, 3) float32, targets {stack_i: (B, R/4, R/4, K) float32}).
    """
    import keras

    from hourglass_tf import preactivation
    from hourglass_tf.batchnorm import use_fused_batch_norm
    from hourglass_tf.model import build_model, output_names
    from hourglass_tf.recompute import recompute_stacks
    from hourglass_tf.train import compile_for_training

    keras.utils.set_random_seed(0)
    model = build_model(num_stacks=num_stacks, filters=filters, input_size=input_size, num_joints=num_joints)
    if fused_batch_norm:
        use_fused_batch_norm(model)
    if recompute:
        recompute_stacks(model)
    if recompute_preactivations:
        preactivation.recompute_preactivations(model)
    compile_for_training(model, keras.optimizers.RMSprop(2.5e-4), jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, input_size, input_size, 3), dtype=np.float32)
    y = {
        n: rng.random((batch_size, input_size // 4, input_size // 4, num_joints), dtype=np.float32)
        for n in output_names(model)
    }
    return model, x, y


def train_step_case(
    num_stacks,
    batch_size=8,
    input_size=256,
    filters=256,
    repeats=3,
    variant="plain",
    recompute=False,
    recompute_preactivations=True,
):
    """Seconds per compiled RMSprop training step (``train_on_batch``, the ``model.fit`` step).

    ``variant``: ``plain`` (float32, batch norm on TF's fused kernel as in training), ``stock_batch_norm``
    (float32, Keras' own element-wise batch norm), ``xla`` (jit_compile) or ``mixed_precision`` (bfloat16
    on CPU, float16 on GPU; outputs and loss float32). ``recompute``: with per-stack recomputation (not with
    ``stock_batch_norm``, which it refuses). ``recompute_preactivations``: as ``compiled_training_model``.
    """
    import keras

    from hourglass_tf.model import conv_flops
    from hourglass_tf.train import mixed_precision_policy

    if variant not in TRAIN_VARIANTS:
        raise ValueError(f"variant must be one of {TRAIN_VARIANTS}, received variant={variant!r}")
    if variant == "mixed_precision":
        keras.mixed_precision.set_global_policy(mixed_precision_policy())
    model, x, y = compiled_training_model(
        num_stacks,
        filters,
        input_size,
        batch_size,
        jit_compile=variant == "xla",
        fused_batch_norm=variant != "stock_batch_norm",
        recompute=recompute,
        recompute_preactivations=recompute_preactivations,
    )
    start = time.perf_counter()
    model.train_on_batch(x, y)  # traces and compiles the train function
    first = time.perf_counter() - start
    seconds = median_seconds(lambda: model.train_on_batch(x, y), repeats, warmup=1)
    flops = 3 * conv_flops(model)
    return {
        "num_stacks": num_stacks,
        "variant": variant,
        "recompute": recompute,
        "recompute_preactivations": recompute_preactivations,
        "batch_size": batch_size,
        "input_size": input_size,
        "filters": filters,
        "seconds": seconds,
        "images_per_s": batch_size / seconds,
        "first_step_seconds": first,
        "gflops_per_s": flops * batch_size / seconds / 1e9,
        "train_flops_per_image": flops,
    }
