"""absl flags for every ``TrainConfig`` field, shared by ``scripts/train.py`` and ``scripts/demo.py``."""

import dataclasses

from absl import flags

from hourglass_tf.config import LR_SCHEDULES, OPTIMIZERS, STRATEGIES, TrainConfig
from hourglass_tf.data import shard_meta

HELP = {
    "dataset": "Dataset layout: mpii, lsp, lspet, flic, coco, synthetic, or coco_keypoints (any COCO keypoint JSON: "
    "the joint set comes from its category).",
    "keypoints_category": "coco_keypoints: the category to read, by name or id (default: the only one with keypoints).",
    "flip_pairs": "coco_keypoints: mirror pairs as 'a:b,c:d' joint names or a JSON file of name pairs (default: from "
    "left/right in the names; none: no flip augmentation and no flip test).",
    "pck_normalizer": "coco_keypoints: PCK normaliser, 'box' (the box's longer side, PCK@0.05) or 'joint_a:joint_b' "
    "(their distance, PCK@0.2).",
    "train_annotations": "coco_keypoints: training annotation file, relative to data_dir (images under data_dir/images).",
    "val_annotations": "coco_keypoints: validation annotation file, relative to data_dir.",
    "data_dir": "Dataset root folder (raw files), or use --tfrecord_dir.",
    "tfrecord_dir": "Folder of TFRecord shards from scripts/prepare_data.py.",
    "num_stacks": "Stacked hourglasses (8 in the paper).",
    "num_blocks": "Residual modules per box (1 in the paper).",
    "filters": "Features throughout the hourglass (256 in the paper).",
    "depth": "Pooling levels per hourglass (4 in the paper).",
    "input_size": "Input crop side in pixels (256 in the paper); heatmaps are a quarter of it.",
    "sigma": "Gaussian sigma of the targets in heatmap pixels (1 in the paper).",
    "batch_size": "Batch size per replica; the global batch is this times the replicas.",
    "epochs": "Epochs to train.",
    "steps_per_epoch": "Steps per epoch; 0 = one pass over the training split.",
    "optimizer": "rmsprop (the paper) or adam.",
    "learning_rate": "Learning rate (RMSprop at 2.5e-4 in the paper).",
    "plateau_factor": "Learning-rate factor when the validation metric plateaus (0.2: divided by 5).",
    "plateau_patience": "Epochs without improvement before the learning rate drops.",
    "lr_drop_epochs": "Comma-separated 1-based epochs at whose start lr is also multiplied by plateau_factor.",
    "time_budget_minutes": "Stop training when this many minutes of training are spent (the last epoch ends early, "
    "is validated and checkpointed); 0 = the epochs decide.",
    "lr_drop_fractions": "Comma-separated fractions of time_budget_minutes at which lr is multiplied by plateau_factor "
    "(the fixed schedule of a time-budgeted run, independent of the machine's speed).",
    "lr_schedule": "plateau (the paper: drop on plateau and at lr_drop_epochs) or cosine (per-step decay to "
    "min_learning_rate over all epochs, for a fixed budget).",
    "min_learning_rate": "Lower bound of the learning rate (the cosine schedule's end point).",
    "ema_momentum": "Exponential moving average of the weights (e.g. 0.999; 0 = off): validation, checkpoints and the "
    "final model use the average, training continues from the trained weights.",
    "rotation": "Maximum rotation of the augmentation in degrees (30).",
    "rotation_prob": "Probability that a training sample is rotated (1; the original Torch code: 0.4).",
    "scale_min": "Smallest scaling factor of the augmentation (0.75).",
    "scale_max": "Largest scaling factor of the augmentation (1.25).",
    "flip": "Horizontal flips with left/right joint swap.",
    "color": "Per-channel colour jitter range (0.2: gains in [0.8, 1.2]).",
    "drop_side_conflicts": "Skip training people whose shoulders and hips face opposite ways (a left/right "
    "labelling slip, e.g. 7 % of LSPET); the validation split is never filtered.",
    "strategy": "Distribution: auto, one_device, mirrored, multi_worker (TF_CONFIG) or tpu.",
    "cpu_replicas": "Split the CPU into this many logical devices and mirror over them (testing).",
    "mixed_precision": "float16 on GPU, bfloat16 on CPU/TPU; outputs and loss stay float32. auto: on where it "
    "speeds training (a GPU, or a CPU with bfloat16 arithmetic: AVX512_BF16 or AMX), float32 elsewhere (a CPU "
    "without it emulates bfloat16, about 10 times slower); the choice is printed and the run directory's flags.txt "
    "records it.",
    "jit_compile": "Compile the training step with XLA.",
    "fused_batch_norm": "Train batch norm with TensorFlow's fused kernel (about 30 % faster steps on CPU); the layers "
    "and saved models stay stock Keras.",
    "sync_batch_norm": "Batch norm statistics over the global batch of all replicas (all-reduced each step) instead "
    "of each replica's slice: for a batch spread thin over several GPUs; no effect on one device. Keras' own "
    "computation (not the fused kernel); the saved layers say synchronized=true and load in plain Keras.",
    "recompute": "Recompute the stem and each stack in the backward pass instead of keeping their activations: "
    "about half the peak memory for about a quarter more time a step (docs/training.md); needs the fused batch norm.",
    "recompute_preactivations": "Recompute each convolution's batch norm -> ReLU input in the backward pass from the "
    "batch norm's input instead of keeping it (with the fused batch norm): a quarter to a third less peak memory "
    "for 2-3 % more time a step (docs/training.md).",
    "run_dir": "Run directory: checkpoints, logs, backup (resume) and the resolved flags. A killed run resumes "
    "from its backup only under the same settings (epochs and verbosity may change).",
    "fresh_start": "Discard run_dir's resume backup and log and start afresh (a reused run_dir with other settings).",
    "init_weights": "Start from this .keras model's weights (a converted published model, any saved one, or a shipped "
    "model's name such as lspet): "
    "layers of the same name and shape are loaded; heads whose joint count differs start afresh. The stem variant "
    "and input mean are the model's.",
    "seed": "Seed of weights, shuffling and augmentation.",
    "validation_freq": "Validate (PCK/PCKh) every this many epochs.",
    "val_batch_size": "Validation batch size.",
    "max_val_samples": "Validate on the first this many samples; 0 = the whole split.",
    "val_flip_test": "Use the flip test during validation.",
    "image_summaries": "Validation samples drawn to TensorBoard each validation.",
    "verbose": "Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch.",
}


AUTO = "auto"  # --mixed_precision=auto: decided on this machine (config_from_flags)


class _BoolOrAutoParser(flags.BooleanParser):
    """A boolean flag's parser (``--name``, ``--noname``, ``--name=false``) that also takes ``auto``."""

    def parse(self, argument):
        if isinstance(argument, str) and argument.strip().lower() == AUTO:
            return AUTO
        return super().parse(argument)

    def flag_type(self):
        return "bool or auto"


def define_train_flags(flag_values=flags.FLAGS):
    """Defines one flag per ``TrainConfig`` field (defaults = the paper's recipe) in ``flag_values``."""
    for field in dataclasses.fields(TrainConfig):
        default, help_text = field.default, HELP[field.name]
        if field.name == "mixed_precision":
            flag = flags.Flag(_BoolOrAutoParser(), None, field.name, default, help_text, boolean=True)
            flags.DEFINE_flag(flag, flag_values=flag_values)
        elif field.name in ("strategy", "optimizer", "lr_schedule"):
            choices = {"strategy": STRATEGIES, "optimizer": OPTIMIZERS, "lr_schedule": LR_SCHEDULES}[field.name]
            flags.DEFINE_enum(field.name, default, list(choices), help_text, flag_values=flag_values)
        elif isinstance(default, bool):
            flags.DEFINE_bool(field.name, default, help_text, flag_values=flag_values)
        elif isinstance(default, int):
            flags.DEFINE_integer(field.name, default, help_text, flag_values=flag_values)
        elif isinstance(default, float):
            flags.DEFINE_float(field.name, default, help_text, flag_values=flag_values)
        else:
            flags.DEFINE_string(field.name, default, help_text, flag_values=flag_values)


COCO_KEYPOINTS_FIELDS = ("keypoints_category", "flip_pairs", "pck_normalizer", "train_annotations", "val_annotations")


def define_coco_keypoints_flags(flag_values=flags.FLAGS):
    """The ``coco_keypoints`` reading flags alone (for scripts that do not train: evaluate, prepare_data)."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name in COCO_KEYPOINTS_FIELDS:
        flags.DEFINE_string(name, defaults[name], HELP[name], flag_values=flag_values)


def coco_options_from_flags(dataset, values=None):
    """``coco_keypoints.Options`` from those flags (None unless ``dataset`` is ``coco_keypoints``)."""
    values = values or flags.FLAGS
    return TrainConfig(dataset=dataset, **{name: values[name].value for name in COCO_KEYPOINTS_FIELDS}).coco_options()


def config_from_flags(values=None, choose_mixed_precision=None, validate=False):
    """The ``TrainConfig`` the parsed flags describe, and what ``--mixed_precision=auto`` chose.

    Returns:
      ``(config, note)``: ``note`` is None, or with ``auto`` one line saying whether mixed precision is on and why
      (``config.mixed_precision`` is then that bool). ``choose_mixed_precision``: a function returning
      ``(pays, reason)``, default ``distribute.mixed_precision_choice`` (this machine).

    ``validate``: check the settings (``TrainConfig.validate``) first, so that a bad flag is said before ``auto``'s
    default choice loads TensorFlow (the scripts do).

    Raises:
      ValueError: with ``validate``, the settings are inconsistent (every problem named).
      DataFileError: with ``validate`` and ``tfrecord_dir``, its ``meta.json`` is missing or the shards were
        written for settings that do not serve these (``shard_meta.check_compatible``).
    """
    values = values or flags.FLAGS
    settings = {f.name: values[f.name].value for f in dataclasses.fields(TrainConfig)}
    note = None
    if validate:  # mixed precision either way does not change validity
        checked = TrainConfig(**{**settings, "mixed_precision": settings["mixed_precision"] is True})
        checked.validate()
        if checked.tfrecord_dir is not None:  # the shards serve these settings (``sources`` checks again)
            meta = shard_meta.read_meta(checked.tfrecord_dir)
            shard_meta.check_compatible(meta, checked.tfrecord_dir, checked.augmentation(), checked.input_size)
    if settings["mixed_precision"] == AUTO:
        if choose_mixed_precision is None:
            from hourglass_tf.distribute import mixed_precision_choice as choose_mixed_precision  # loads TensorFlow
        settings["mixed_precision"], reason = choose_mixed_precision()
        note = f"--mixed_precision=auto: {reason}"
    return TrainConfig(**settings), note


def flags_text(config):
    """The resolved settings as a flagfile (one ``--name=value`` per line)."""
    return "".join(f"--{k}={v}\n" for k, v in dataclasses.asdict(config).items() if v is not None)
