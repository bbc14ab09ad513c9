"""The network: exact size, outputs, early exit, mixed precision, training, saving, bad arguments."""

import collections
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY, random_batch_norm_statistics
from hourglass_tf import build_model, output_names, truncate
from hourglass_tf.train import compile_for_training

# Trainable parameters of the original Torch code (256 features, 1 module per box, 16 joints, 256 px).
PAPER_COUNTS = {1: 3_426_448, 2: 6_570_400, 4: 12_858_304, 8: 25_434_112}


def trainable_count(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.fixture(scope="module")
def paper_model():
    return build_model(num_stacks=8)


def test_paper_model_has_the_original_parameter_count(paper_model):
    assert trainable_count(paper_model) == PAPER_COUNTS[8]


@pytest.mark.parametrize("k", [1, 2, 4])
def test_first_k_stacks_have_the_k_stack_parameter_count(paper_model, k):
    # The early-exit model of k stacks is exactly the k-stack network.
    assert trainable_count(truncate(paper_model, k)) == PAPER_COUNTS[k]


def test_two_stack_model_built_directly_has_the_original_count():
    assert trainable_count(build_model(num_stacks=2)) == PAPER_COUNTS[2]


def test_paper_model_outputs(paper_model):
    assert paper_model.input_shape == (None, 256, 256, 3)
    assert paper_model.inputs[0].name == "image"
    assert output_names(paper_model) == [f"stack_{s}" for s in range(1, 9)]
    for out in paper_model.outputs:
        assert tuple(out.shape) == (None, 64, 64, 16)
        assert out.dtype == "float32"


def test_paper_model_uses_only_stock_layers(paper_model):
    stock = {
        "InputLayer",
        "ZeroPadding2D",
        "Conv2D",
        "BatchNormalization",
        "ReLU",
        "MaxPooling2D",
        "UpSampling2D",
        "Add",
    }
    used = {type(layer).__name__ for layer in paper_model.layers}
    assert used <= stock, used - stock
    for layer in paper_model.layers:
        assert type(layer).__module__.startswith("keras."), layer


def test_conv_flops_match_the_papers_multiply_adds(paper_model):
    from hourglass_tf.model import conv_flops

    # About 27.4 G multiply-adds per image for 8 stacks (54.9 GFLOP, measured independently in the speed issue).
    assert conv_flops(paper_model) == pytest.approx(54.9e9, rel=2e-3)
    assert conv_flops(truncate(paper_model, 2)) < conv_flops(paper_model) / 3


def test_conv_flops_count_each_convolution_from_its_shapes():
    from hourglass_tf.model import conv_flops

    image = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(image)  # 8x8 out, 3x3x3 -> 4
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(6, 1, strides=2)(x)  # 4x4 out, 1x1x4 -> 6
    x = keras.layers.Conv2D(6, 3, padding="same", groups=2)(x)  # 4x4 out, 3x3x6 -> 6 in 2 groups
    expected = 2 * (8 * 8 * 9 * 3 * 4 + 4 * 4 * 1 * 4 * 6 + 4 * 4 * 9 * 6 * 6 // 2)
    assert conv_flops(keras.Model(image, x)) == expected


def test_num_blocks_ablation_has_equal_module_counts():
    # The paper's ablation: 2 stacks x 4 modules, 4 x 2 and 8 x 1 hold the same number of residual
    # modules (14 per stack and block: 13 in a depth-4 hourglass, 1 after it; 112 in all), so about
    # the same size (they differ by the stem-free 1x1 merges between stacks).
    modules, counts = [], []
    for s, b in ((2, 4), (4, 2), (8, 1)):
        model = build_model(num_stacks=s, num_blocks=b, filters=32, depth=4, input_size=64)
        modules.append(
            sum(
                1
                for layer in model.layers
                if layer.name.startswith("hg") and layer.name.endswith("_add") and "_res" in layer.name
            )
        )
        counts.append(trainable_count(model))
    assert modules == [112, 112, 112]
    assert max(counts) / min(counts) < 1.1, counts


def test_output_shapes_for_rectangular_input_and_joint_count():
    model = build_model(num_stacks=1, filters=16, depth=3, num_joints=14, input_size=(64, 96))
    out = model.predict_on_batch(np.zeros((2, 64, 96, 3), np.float32))
    assert set(out) == {"stack_1"}
    assert out["stack_1"].shape == (2, 16, 24, 14)
    assert out["stack_1"].dtype == np.float32


def test_truncate_shares_weights_and_matches_the_full_model():
    model = build_model(**TINY)
    first = truncate(model, 1)
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    full = model.predict_on_batch(x)
    early = first.predict_on_batch(x)
    assert set(early) == {"stack_1"}
    np.testing.assert_allclose(early["stack_1"], full["stack_1"], atol=1e-6)
    # The same variables: changing the full model's head changes the truncated model's output.
    head = model.get_layer("stack_1")
    kernel, bias = head.get_weights()
    head.set_weights([kernel, bias + 1.0])
    np.testing.assert_allclose(first.predict_on_batch(x)["stack_1"], full["stack_1"] + 1.0, atol=1e-5)
    # Later stacks are not part of the early-exit graph.
    names = {layer.name for layer in first.layers}
    assert "hg2_d2_add" not in names and "hg1_merge" not in names


@pytest.mark.parametrize("k", [0, 3, -1])
def test_truncate_rejects_out_of_range(k):
    model = build_model(**TINY)
    with pytest.raises(ValueError, match=f"num_stacks={k}"):
        truncate(model, k)


def test_stem_pads_symmetrically_like_torch():
    # Torch's SpatialConvolution(3,64,7,7,2,2,3,3) pads 3 on every side; output pixel j is centred on
    # input pixel 2j. An impulse at input (2j, 2j) must reach the centre tap of output (j, j).
    # TF's "same" padding (2 before, 3 after) would centre output j on input 2j + 1 and miss the impulse.
    full = build_model(num_stacks=1, filters=16, depth=2, input_size=64)
    conv = keras.Model(full.inputs[0], full.get_layer("stem_conv").output)
    kernel = np.zeros((7, 7, 3, 64), np.float32)
    kernel[3, 3, 0, 0] = 1.0  # centre tap only
    conv.get_layer("stem_conv").set_weights([kernel, np.zeros(64, np.float32)])
    x = np.zeros((1, 64, 64, 3), np.float32)
    x[0, 10, 20, 0] = 1.0
    y = conv.predict_on_batch(x)[0, :, :, 0]
    assert y.shape == (32, 32)
    assert np.unravel_index(np.argmax(y), y.shape) == (5, 10)


def test_mixed_precision_outputs_stay_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model(**TINY)
        assert model.get_layer("hg1_d2_skip_res1_conv1").compute_dtype == "bfloat16"
        out = model.predict_on_batch(np.zeros((1, 64, 64, 3), np.float32))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for name in ("stack_1", "stack_2"):
        assert out[name].dtype == np.float32


def gaussian_targets(rng, n, size=16, joints=16, sigma=1.0):
    yy, xx = np.mgrid[0:size, 0:size]
    centres = rng.uniform(2, size - 3, (n, joints, 2))
    d2 = (xx[None, None] - centres[..., 0, None, None]) ** 2 + (yy[None, None] - centres[..., 1, None, None]) ** 2
    return np.exp(-d2 / (2 * sigma**2)).transpose(0, 2, 3, 1).astype(np.float32)


def test_a_few_fit_steps_lower_the_summed_per_stack_loss():
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    model = build_model(**TINY)
    x = rng.random((8, 64, 64, 3), dtype=np.float32)
    target = gaussian_targets(rng, 8)
    compile_for_training(model, keras.optimizers.RMSprop(1e-3))  # one MSE per stack, traced once
    history = model.fit(x, {"stack_1": target, "stack_2": target}, batch_size=8, epochs=20, verbose=0).history
    assert {"loss", "stack_1_loss", "stack_2_loss"} <= set(history)
    summed = np.array(history["stack_1_loss"]) + np.array(history["stack_2_loss"])
    # The heads start near zero output, i.e. at the all-zero heatmaps' loss; learning goes below it.
    zero_level = 2 * float(np.mean(target**2))
    assert summed[0] <= 1.05 * zero_level
    assert summed[-1] < 0.8 * summed[0], summed
    # Still learning at the end: every epoch of the second half sits below every epoch of the first. (Not a
    # per-epoch strict decrease: with batch-norm statistics in play, one epoch may tick up by a hair, which
    # CI's CPU showed once: 0.019408 -> 0.019457.)
    half = len(summed) // 2
    assert summed[half:].max() < summed[:half].min(), summed
    np.testing.assert_allclose(history["loss"], summed, rtol=1e-3)


def test_keras_file_loads_in_a_process_that_never_imports_hourglass_tf(tmp_path):
    """A model trained with the fused batch-norm kernel, as scripts/train.py trains by default. (An untrained
    model with its description: test_metadata's ``test_a_keras_file_with_its_description_loads_without_the_package``;
    the shipped model: test_pretrained's plain-Keras program.)"""
    from hourglass_tf.batchnorm import use_fused_batch_norm

    model = build_model(**TINY)
    x = np.random.default_rng(2).random((2, 64, 64, 3), dtype=np.float32)
    assert use_fused_batch_norm(model) > 0
    model.compile(optimizer="sgd", loss={n: "mse" for n in output_names(model)})
    model.train_on_batch(x, {n: np.zeros((2, 16, 16, 16), np.float32) for n in output_names(model)})
    expected = model.predict_on_batch(x)
    model.save(tmp_path / "tiny.keras")
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        import tensorflow as tf
        model = tf.keras.models.load_model(sys.argv[1])  # default safe_mode
        out = model.predict_on_batch(np.load(sys.argv[2]))
        np.savez(sys.argv[3], **out)
        print(json.dumps({"hourglass_tf_imported": any(m.startswith("hourglass_tf") for m in sys.modules)}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "tiny.keras"), str(tmp_path / "x.npy"), str(tmp_path / "y.npz")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"hourglass_tf_imported": False}
    loaded = np.load(tmp_path / "y.npz")
    assert sorted(loaded.files) == ["stack_1", "stack_2"]
    for name in ("stack_1", "stack_2"):
        np.testing.assert_array_equal(loaded[name], expected[name])


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(num_stacks=0), "num_stacks=0"),
        (dict(num_blocks=-1), "num_blocks=-1"),
        (dict(filters=0), "filters=0"),
        (dict(filters=15), "filters=15"),
        (dict(depth=0), "depth=0"),
        (dict(num_joints=0), "num_joints=0"),
        (dict(num_stacks=2.0), "num_stacks=2.0"),
        (dict(input_size=100), "input_size=100"),
        (dict(input_size=48, depth=4), "input_size=48"),
        (dict(input_size=(64, 96, 3)), r"input_size=\(64, 96, 3\)"),
        (dict(input_size=-64), "input_size=-64"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        build_model(**kwargs)


def test_the_pytorch_pose_variant_has_its_published_parameter_count():
    """bearpaw/pytorch-pose's stem widens one residual earlier: 160,512 more parameters at 8 stacks x 256."""
    from hourglass_tf.model import architecture_of

    model = build_model(num_stacks=8, variant="pytorch_pose")
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 25_594_624 == 25_434_112 + 160_512
    assert architecture_of(model)["variant"] == "pytorch_pose"
    assert architecture_of(build_model(num_stacks=1, filters=16, depth=2, input_size=64))["variant"] == "hg.lua"
    with pytest.raises(ValueError, match="variant='umich'"):
        build_model(num_stacks=1, variant="umich")


@pytest.mark.parametrize("variant", ["hg.lua", "pytorch_pose", "umich_t7"])
def test_folding_batch_norm_keeps_the_heatmaps_and_every_layer_name(variant, tmp_path):
    from hourglass_tf.model import fold_batch_norm, foldable_batch_norms

    model = build_model(**{**TINY, "variant": variant})
    rng = random_batch_norm_statistics(model)
    pairs = foldable_batch_norms(model)
    norms = [layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    # every module's second and third, the stem's and each head's; never a first (its input feeds the skip too)
    assert sorted(pairs) == sorted(n for n in norms if not n.endswith("_bn1"))
    assert all(model.get_layer(conv).output is model.get_layer(bn).input for bn, conv in pairs.items())
    folded = fold_batch_norm(model)
    assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]
    left = [layer.name for layer in folded.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert sorted(left) == sorted(n for n in norms if n.endswith("_bn1"))
    crops = rng.uniform(0, 1, (3, 64, 64, 3)).astype(np.float32)
    before, after = model(crops, training=False), folded(crops, training=False)
    for name in output_names(model):
        scale = float(np.max(np.abs(before[name])))
        assert scale > 0
        assert float(np.max(np.abs(np.asarray(after[name]) - np.asarray(before[name])))) <= 1e-5 * scale
    # the batch norms left run the fused inference kernel: one FusedBatchNormV3 each, no Keras normalisation ops
    graph = tf.function(lambda x: folded(x, training=False)).get_concrete_function(tf.constant(crops)).graph
    kinds = collections.Counter(op.type for op in graph.get_operations())
    assert kinds["FusedBatchNormV3"] == len(left) and kinds["Rsqrt"] == 0, kinds
    folded.save(tmp_path / "folded.keras")  # stock layers only: plain Keras reloads it (Keras' own computation)
    again = keras.models.load_model(tmp_path / "folded.keras", safe_mode=True, compile=False)
    reloaded = again(crops)
    for name in output_names(model):
        scale = float(np.max(np.abs(before[name])))
        assert float(np.max(np.abs(np.asarray(reloaded[name]) - np.asarray(after[name])))) <= 1e-5 * scale


def test_stack_input_is_the_stem_output_then_each_merge():
    from hourglass_tf.model import stack_input

    model = build_model(**TINY)
    assert stack_input(model, 1) is model.get_layer("stem_res3_add").output
    assert stack_input(model, 2) is model.get_layer("hg1_merge").output
    assert tuple(stack_input(model, 2).shape) == (None, 16, 16, TINY["filters"])
    with pytest.raises(ValueError, match=r"has no layer 'hg2_merge' \(the input of stack 3\)"):
        stack_input(model, 3)
