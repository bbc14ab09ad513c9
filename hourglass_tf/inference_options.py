"""What the test-time procedure (``inference.Predictor``) takes, checked without TensorFlow.

``scripts/predict.py`` and ``scripts/evaluate.py`` check ``--test_scales`` here before TensorFlow loads, so a bad
value is said in a fraction of a second; ``inference`` re-exports ``parse_scales``.
"""

import math


def parse_scales(scales, name="test scales"):
    """Scales -> tuple of positive finite floats; raises ``ValueError`` naming ``name`` and what was received."""
    try:
        values = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, received {scales!r}") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name} must be one or more positive numbers, received {scales!r}")
    return values
