"""Converts published stacked-hourglass weights into this package's Keras model, exactly.

    python scripts/convert_weights.py --input=umich-stacked-hourglass.t7 --output=runs/umich8.keras
    python scripts/convert_weights.py --input=checkpoint.pt --output=runs/psh8.keras
    python scripts/convert_weights.py --from=pytorch_pose --input=model_best.pth.tar --output=runs/hg8.keras

--from is one of torch7, pytorch_stacked_hourglass, pytorch_pose; without it the layout is recognised from the
file. Stacks, blocks, features, depth and joints are read from the weights. The file is read without Lua or
PyTorch and without running code from it (a pickle naming anything but tensors and containers is refused). The output
is a float32 .keras file with the model's description inside; predict, evaluate, export and fine-tune it as
any other model of the package.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hourglass_tf import runtime  # noqa: E402

runtime.tune_allocators()  # before TensorFlow's first op: the allocator settings the package measured faster

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "from", None, ["torch7", "pytorch_stacked_hourglass", "pytorch_pose"], "Layout of --input (default: recognised)."
)
flags.DEFINE_string("input", None, "The published weights file.")
flags.DEFINE_string("output", None, "The .keras file to write.")
flags.DEFINE_string("skeleton", "mpii", "Joint set in the file's channel order (the ports publish MPII models).")
flags.DEFINE_integer("input_size", 256, "Input size of the converted model (256 for the published models).")
flags.DEFINE_list("input_mean", None, "pytorch_pose: the R,G,B mean its training subtracted (default: its MPII mean).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
flags.mark_flags_as_required(["input", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import json
    import pathlib

    if not pathlib.Path(FLAGS.input).is_file():  # said before TensorFlow loads
        print(f"error: {FLAGS.input}: no such file", file=sys.stderr)
        return 2
    from hourglass_tf import metadata
    from hourglass_tf.weights import convert, torch_files

    output = pathlib.Path(FLAGS.output)
    if output.suffix != ".keras":
        raise app.UsageError(f"--output must end in .keras, received {FLAGS.output}")
    if output.exists() and not FLAGS.overwrite:
        print(f"error: {output} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        mean = [float(v) for v in FLAGS.input_mean] if FLAGS.input_mean else None
    except ValueError:
        raise app.UsageError(f"--input_mean must be three numbers, received {','.join(FLAGS.input_mean)}") from None
    try:
        model, info, report = convert.convert(FLAGS.input, FLAGS["from"].value, FLAGS.skeleton, FLAGS.input_size, mean)
    except (torch_files.CheckpointError, convert.ConversionError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    output.parent.mkdir(parents=True, exist_ok=True)
    metadata.save_keras(model, output, info)
    print(json.dumps(report, indent=1))
    print(f"written {output}")
    return 0


if __name__ == "__main__":
    app.run(main)
