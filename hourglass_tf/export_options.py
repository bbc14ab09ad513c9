"""What ``export.export_model`` accepts, checked without TensorFlow.

``scripts/export.py`` checks its flags here before TensorFlow loads, so a mistyped format or an early exit past
the model's stacks is said in a fraction of a second; ``export_model`` applies the same checks to its arguments.
``hourglass_tf.export`` re-exports ``FORMATS`` and ``QUANTIZATIONS``.
"""

FORMATS = ("keras", "saved_model", "tflite", "onnx")
QUANTIZATIONS = ("none", "float16", "int8")
PRECISIONS = ("float32", "bfloat16")
DETECTORS = ("ssdlite",)


def check(formats, quantize="none", precision="float32", num_stacks=None, model_stacks=None, detector=None):
    """ValueError saying what was received when the export options do not go together.

    Args:
      formats: a non-empty subset of ``FORMATS``.
      quantize: one of ``QUANTIZATIONS`` (TFLite only).
      precision: one of ``PRECISIONS``; bfloat16 is written as a SavedModel (and the ``.keras`` file), not as
        TFLite or ONNX.
      num_stacks: the early exit, 1 <= num_stacks <= ``model_stacks``; None exports every stack.
      model_stacks: the model's stack count when known (from its description); None leaves the upper bound to
        the model (``model.truncate``).
      detector: None, or a name in ``DETECTORS`` (a detector object is checked where it is used).
    """
    formats = list(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, received formats={formats}")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, received quantize={quantize!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, received precision={precision!r}")
    if precision == "bfloat16" and set(formats) - {"keras", "saved_model"}:
        raise ValueError(
            "precision='bfloat16' writes a bfloat16 SavedModel; TFLite and ONNX files are float32 (or quantized): "
            f"export them without it, received formats={formats}"
        )
    if num_stacks is not None:
        if isinstance(num_stacks, bool) or not isinstance(num_stacks, int) or num_stacks < 1:
            raise ValueError(f"`num_stacks` must be a positive integer, received num_stacks={num_stacks!r}")
        if model_stacks is not None and num_stacks > model_stacks:
            raise ValueError(
                f"`num_stacks` must be at most the model's {model_stacks} stacks, received num_stacks={num_stacks}"
            )
    if isinstance(detector, str) and detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS} or None, received detector={detector!r}")
