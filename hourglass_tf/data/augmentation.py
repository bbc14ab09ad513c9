"""The training augmentation's settings (``Augmentation``), checked when made; importable without TensorFlow, so a
run's settings are checked before TensorFlow loads. ``data.pipeline`` applies them."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The paper's augmentation: rotation +-30 deg, scaling 0.75-1.25, flip, no translation.

    Attributes:
      rotation: maximum rotation in degrees (uniform in [-rotation, rotation]).
      rotation_prob: probability that a sample is rotated at all (1: always, as the paper's
        text reads; the original Torch code rotates 40 % of the samples, 0.4).
      scale_min, scale_max: range of the box scaling factor (uniform).
      flip: mirror half of the samples, swapping left/right joints.
      color: per-channel multiplicative jitter range [1 - color, 1 + color] (0 disables).
    """

    rotation: float = 30.0
    scale_min: float = 0.75
    scale_max: float = 1.25
    flip: bool = True
    color: float = 0.2
    rotation_prob: float = 1.0

    def __post_init__(self):
        if not 0 <= self.rotation <= 180:
            raise ValueError(f"rotation must be in [0, 180] degrees, received rotation={self.rotation}")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(
                f"need 0 < scale_min <= scale_max, received scale_min={self.scale_min}, scale_max={self.scale_max}"
            )
        if not 0 <= self.rotation_prob <= 1:
            raise ValueError(f"rotation_prob must be in [0, 1], received rotation_prob={self.rotation_prob}")
        if not 0 <= self.color < 1:
            raise ValueError(f"color must be in [0, 1), received color={self.color}")


NO_AUGMENTATION = Augmentation(rotation=0.0, scale_min=1.0, scale_max=1.0, flip=False, color=0.0)
