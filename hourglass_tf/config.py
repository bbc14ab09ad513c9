"""``TrainConfig``: every choice of a training run, checked before anything is built."""

import dataclasses
import math
import pathlib

from hourglass_tf import metrics, pretrained
from hourglass_tf.data import DATASETS
from hourglass_tf.data.augmentation import Augmentation

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
OPTIMIZERS = ("rmsprop", "adam")
LR_SCHEDULES = ("plateau", "cosine")


@dataclasses.dataclass
class TrainConfig:
    """Every choice of a training run. Defaults are the paper's recipe (MPII, 8 stacks)."""

    dataset: str = "mpii"
    data_dir: str = None
    tfrecord_dir: str = None
    keypoints_category: str = None  # coco_keypoints: category name or id (None: the only one with keypoints)
    flip_pairs: str = None  # coco_keypoints: "a:b,c:d" joint names or a JSON file (None: from the names)
    pck_normalizer: str = "box"  # coco_keypoints: "box" (longer side, PCK@0.05) or "joint_a:joint_b" (PCK@0.2)
    train_annotations: str = "annotations/train.json"  # coco_keypoints, relative to data_dir
    val_annotations: str = "annotations/val.json"
    num_stacks: int = 8
    num_blocks: int = 1
    filters: int = 256
    depth: int = 4
    input_size: int = 256
    sigma: float = 1.0
    batch_size: int = 6  # per replica
    epochs: int = 100
    steps_per_epoch: int = 0  # 0: one pass over the training split
    optimizer: str = "rmsprop"
    learning_rate: float = 2.5e-4
    plateau_factor: float = 0.2
    plateau_patience: int = 5
    lr_drop_epochs: str = ""  # e.g. "6,8": also multiply lr by plateau_factor when these (1-based) epochs start
    time_budget_minutes: float = 0.0  # > 0: stop training when this much training time is spent (0: epochs decide)
    lr_drop_fractions: str = ""  # e.g. "0.8,0.9": lr x plateau_factor when these fractions of the time budget pass
    lr_schedule: str = "plateau"  # "cosine": decay per step from learning_rate to min_learning_rate over the run
    min_learning_rate: float = 1e-7
    ema_momentum: float = 0.0  # > 0: validate, checkpoint and return the moving average of the weights
    rotation: float = 30.0
    rotation_prob: float = 1.0
    scale_min: float = 0.75
    scale_max: float = 1.25
    flip: bool = True
    color: float = 0.2
    drop_side_conflicts: bool = False  # skip training people whose shoulders and hips face opposite ways
    strategy: str = "auto"
    cpu_replicas: int = 0  # >1: split the CPU into this many logical devices (testing MirroredStrategy)
    mixed_precision: bool = False
    jit_compile: bool = False
    fused_batch_norm: bool = True  # train batch norm with TF's fused kernel (same layers, same saved model)
    sync_batch_norm: bool = False  # batch statistics over the global batch of all replicas (Keras synchronized=True)
    recompute: bool = False  # recompute the stem and each stack in the backward pass: less memory, more work
    recompute_preactivations: bool = True  # recompute batch norm -> ReLU inputs of convolutions in the backward pass
    run_dir: str = "runs/train"
    fresh_start: bool = False  # discard the resume backup and log of run_dir and start afresh
    init_weights: str = None  # a .keras model whose weights start the run (heads that do not fit start afresh)
    seed: int = 0
    validation_freq: int = 1
    val_batch_size: int = 16
    max_val_samples: int = 0  # 0: the whole validation split
    val_flip_test: bool = False
    image_summaries: int = 4
    verbose: int = 1

    @property
    def metric_name(self):
        return "val_pckh" if self.metric_threshold == 0.5 else "val_pck"

    @property
    def metric_threshold(self):
        return metrics.pck_threshold(self.dataset, self.pck_normalizer)

    def coco_options(self):
        """How a ``coco_keypoints`` dataset is read (None for the other datasets)."""
        if self.dataset != "coco_keypoints":
            return None
        from hourglass_tf.data import coco_keypoints

        return coco_keypoints.Options(
            category=self.keypoints_category,
            flip_pairs=self.flip_pairs,
            normalizer=self.pck_normalizer,
            train_file=self.train_annotations,
            val_file=self.val_annotations,
        )

    def validate(self):
        """Raises ValueError naming every inconsistent choice, before anything is built."""
        problems = []
        if self.dataset not in DATASETS:
            problems.append(f"dataset={self.dataset!r} is not one of {DATASETS}")
        if (self.data_dir is None) == (self.tfrecord_dir is None):
            problems.append(
                f"give exactly one of data_dir and tfrecord_dir (data_dir={self.data_dir!r}, "
                f"tfrecord_dir={self.tfrecord_dir!r})"
            )
        if self.drop_side_conflicts and self.tfrecord_dir is not None:
            problems.append("drop_side_conflicts needs data_dir (raw annotations); TFRecord shards are read as written")
        for name in (
            "num_stacks",
            "num_blocks",
            "filters",
            "depth",
            "input_size",
            "batch_size",
            "epochs",
            "validation_freq",
            "val_batch_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name} must be a positive integer, received {name}={value!r}")
        for name in ("steps_per_epoch", "max_val_samples", "image_summaries", "cpu_replicas"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                problems.append(f"{name} must be a non-negative integer, received {name}={value!r}")
        if isinstance(self.input_size, int) and isinstance(self.depth, int) and self.depth > 0:
            if self.input_size % (4 * 2**self.depth):
                problems.append(f"input_size={self.input_size} must be divisible by 4 * 2**depth = {4 * 2**self.depth}")
        if self.recompute and (not self.fused_batch_norm or self.sync_batch_norm):
            problems.append(
                "recompute needs batch norm on the fused kernel (fused_batch_norm=True, sync_batch_norm=False), "
                f"received fused_batch_norm={self.fused_batch_norm}, sync_batch_norm={self.sync_batch_norm}"
            )
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer={self.optimizer!r} is not one of {OPTIMIZERS}")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be positive, received learning_rate={self.learning_rate}")
        if not 0 < self.plateau_factor < 1:
            problems.append(f"plateau_factor must be in (0, 1), received plateau_factor={self.plateau_factor}")
        try:
            self.drop_epochs()
        except ValueError as err:
            problems.append(str(err))
        budget = self.time_budget_minutes
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget < 0:
            problems.append(
                f"time_budget_minutes must be a non-negative number, received time_budget_minutes={budget!r}"
            )
        try:
            fractions = self.drop_fractions()
        except ValueError as err:
            problems.append(str(err))
            fractions = ()
        if fractions and not (isinstance(budget, (int, float)) and budget > 0):
            problems.append(
                f"lr_drop_fractions={self.lr_drop_fractions!r} needs time_budget_minutes > 0, "
                f"received time_budget_minutes={budget!r}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule={self.lr_schedule!r} is not one of {LR_SCHEDULES}")
        elif self.lr_schedule == "cosine":
            for name in ("lr_drop_epochs", "lr_drop_fractions"):
                if (getattr(self, name) or "").strip():
                    problems.append(
                        f"{name}={getattr(self, name)!r} applies to lr_schedule='plateau' only; "
                        "lr_schedule='cosine' sets the rate of every step"
                    )
        if not 0 < self.min_learning_rate < self.learning_rate:
            problems.append(
                f"min_learning_rate must be in (0, learning_rate={self.learning_rate}), "
                f"received min_learning_rate={self.min_learning_rate}"
            )
        ema = self.ema_momentum
        if isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0 <= ema < 1:
            problems.append(f"ema_momentum must be in [0, 1) (0: off), received ema_momentum={ema!r}")
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy={self.strategy!r} is not one of {STRATEGIES}")
        if self.cpu_replicas > 1 and self.strategy not in ("mirrored", "auto"):
            problems.append(
                f"cpu_replicas={self.cpu_replicas} needs strategy=mirrored, received strategy={self.strategy!r}"
            )
        try:
            self.augmentation()
        except ValueError as err:
            problems.append(str(err))
        normalizer = str(self.pck_normalizer)
        if normalizer != "box" and len([part for part in normalizer.split(":") if part]) != 2:
            problems.append(
                f"pck_normalizer must be 'box' or 'joint_a:joint_b', received pck_normalizer={normalizer!r}"
            )
        weights = self.init_weights
        if weights and not pathlib.Path(weights).is_file() and not pretrained.names_shipped_model(weights):
            problem = f"init_weights={weights!r} is not a file or a shipped model's name"
            if weights in pretrained.MODELS:  # then not a shipped name only because a folder of that name exists
                problem += " (a folder of that name is here, and it is taken before the shipped model)"
            problems.append(problem)
        if problems:
            raise ValueError("invalid training configuration:\n  " + "\n  ".join(problems))

    def drop_epochs(self):
        """``lr_drop_epochs`` as a sorted tuple of 1-based epoch numbers; ValueError when malformed."""
        return _sorted_list(
            self.lr_drop_epochs,
            int,
            lambda e: e >= 1,
            f"lr_drop_epochs must be comma-separated epoch numbers >= 1, received {self.lr_drop_epochs!r}",
        )

    def drop_fractions(self):
        """``lr_drop_fractions`` as a sorted tuple of fractions in (0, 1); ValueError when malformed."""
        return _sorted_list(
            self.lr_drop_fractions,
            float,
            lambda f: 0 < f < 1,
            "lr_drop_fractions must be comma-separated fractions of the time budget in (0, 1), "
            f"received {self.lr_drop_fractions!r}",
        )

    def augmentation(self):
        return Augmentation(self.rotation, self.scale_min, self.scale_max, self.flip, self.color, self.rotation_prob)


def _sorted_list(text, convert, valid, message):
    """A comma-separated flag value as a sorted tuple (empty for ""); ValueError(message) when malformed."""
    text = (text or "").strip()
    if not text:
        return ()
    try:
        values = tuple(sorted(convert(part) for part in text.split(",")))
    except ValueError:
        values = ()
    if not values or not all(valid(v) for v in values):
        raise ValueError(message)
    return values
