"""Codec, crop geometry, the tf.data pipeline, bad samples, TFRecord shards and the synthetic set."""

import json

import cv2
import numpy as np
import pytest
import tensorflow as tf

from hourglass_tf import skeleton
from hourglass_tf.codec import HeatmapCodec
from hourglass_tf.data import pipeline, readers, synthetic, tfrecords
from hourglass_tf.data.sample import PoseSample
from hourglass_tf.geometry import apply_matrix, crop_matrix

# ---------------------------------------------------------------- codec


def test_codec_round_trip_within_a_quarter_pixel_for_sub_pixel_joints():
    codec = HeatmapCodec(64, 16, sigma=1.0)
    rng = np.random.default_rng(0)
    heat = rng.uniform(2, 13, (200, 5, 2)).astype(np.float32)  # heatmap pixels, away from the border
    joints = codec.heatmap_to_input(heat)
    maps = codec.encode(joints, tf.ones((200, 5), tf.bool))
    assert maps.shape == (200, 16, 16, 5)
    decoded, scores = codec.decode(maps)
    err = np.abs(codec.input_to_heatmap(decoded).numpy() - heat)
    assert err.max() <= 0.25 + 1e-5
    # The quarter shift helps: plain argmax is off by up to 0.5.
    plain = np.abs(np.round(heat) - heat)
    assert err.mean() < plain.mean()
    assert np.all(scores.numpy() > 0.6)


def test_codec_on_integer_joint_is_exact_and_zero_for_missing_or_outside():
    codec = HeatmapCodec(64, 16)
    joints = codec.heatmap_to_input(tf.constant([[[5.0, 7.0], [3.0, 3.0], [20.0, 4.0]]]))
    maps = codec.encode(joints, tf.constant([[True, False, True]]))
    assert float(maps[0, 7, 5, 0]) == pytest.approx(1.0)
    assert float(tf.reduce_max(maps[0, :, :, 1])) == 0.0  # missing
    assert float(tf.reduce_max(maps[0, :, :, 2])) == 0.0  # outside the crop
    decoded, _ = codec.decode(maps[..., :1])
    np.testing.assert_allclose(codec.input_to_heatmap(decoded).numpy()[0, 0], [5.0, 7.0])


def test_codec_coordinate_maps_are_inverse_and_centre_aligned():
    codec = HeatmapCodec(256, 64)
    assert float(codec.input_to_heatmap(tf.constant([1.5, 1.5]))[0]) == pytest.approx(0.0)
    p = tf.constant([[12.3, 200.7]])
    np.testing.assert_allclose(codec.heatmap_to_input(codec.input_to_heatmap(p)).numpy(), p.numpy(), atol=1e-5)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_dark_refinement_decodes_the_codec_s_own_targets_exactly(sigma):
    codec = HeatmapCodec(64, 16, sigma=sigma, refine="dark")
    rng = np.random.default_rng(1)
    heat = rng.uniform(1.5, 13.5, (200, 5, 2)).astype(np.float32)
    maps = codec.encode(codec.heatmap_to_input(heat), tf.ones((200, 5), tf.bool))
    decoded, scores = codec.decode(maps)
    err = np.abs(codec.input_to_heatmap(decoded).numpy() - heat)
    # A Gaussian smoothed by a Gaussian stays a Gaussian: exact wherever the smoothing kernel stays inside
    # the map (zeros beyond the border pull peaks near it inwards, as in the published method).
    inside = np.all((heat >= 3 * sigma) & (heat <= 15 - 3 * sigma), axis=-1)
    assert inside.sum() > 20 and err[inside].max() < 1e-3, err[inside].max()
    assert err.mean() < 0.05  # the quarter rule is off by 0.126 on average here
    np.testing.assert_allclose(scores, HeatmapCodec(64, 16, sigma=sigma).decode(maps)[1])


def test_dark_refinement_modulates_then_falls_back_to_the_quarter_rule_on_the_border():
    quarter, dark = HeatmapCodec(64, 16), HeatmapCodec(64, 16, refine="dark")
    maps = np.zeros((1, 16, 16, 3), np.float32)
    maps[0, 7, 0, 0], maps[0, 7, 1, 0] = 1.0, 0.5  # on the border: no 3x3 neighbourhood
    maps[0, 5, 5, 1] = 1.0  # a lone spike: smoothing makes it a symmetric bump, decoded on the pixel
    maps[0, 9, 9, 2], maps[0, 9, 10, 2] = 1.0, 0.6  # a one-sided peak: pulled toward the heavier side
    q = quarter.input_to_heatmap(quarter.decode(maps)[0]).numpy()[0]
    d = dark.input_to_heatmap(dark.decode(maps)[0]).numpy()[0]
    np.testing.assert_allclose(d[0], q[0])
    np.testing.assert_allclose(d[1], [5.0, 5.0], atol=1e-5)
    assert 9.1 < d[2][0] < 9.5 and abs(d[2][1] - 9.0) < 1e-5, d[2]
    # Modulation keeps each map's maximum and moves no peak off its pixel.
    modulated = dark.modulate(maps).numpy()
    np.testing.assert_allclose(modulated.max(axis=(1, 2)), maps.max(axis=(1, 2)), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs", [dict(input_size=0), dict(input_size=64, heatmap_size=24), dict(sigma=0), dict(refine="soft")]
)
def test_codec_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=list(kwargs)[-1]):
        HeatmapCodec(**kwargs)


# ---------------------------------------------------------------- geometry


def test_crop_matrix_maps_centre_to_crop_centre_and_box_to_crop():
    m = crop_matrix([100.0, 50.0], 0.5, 64)  # box side 100 px -> 64 px
    pts = apply_matrix(m, tf.constant([[100.0, 50.0], [150.0, 50.0]])).numpy()
    np.testing.assert_allclose(pts[0], [31.5, 31.5], atol=1e-4)
    np.testing.assert_allclose(pts[1], [31.5 + 32.0, 31.5], atol=1e-4)
    flipped = apply_matrix(crop_matrix([100.0, 50.0], 0.5, 64, flip=True), tf.constant([[150.0, 50.0]])).numpy()
    np.testing.assert_allclose(flipped[0], [31.5 - 32.0, 31.5], atol=1e-4)
    rotated = apply_matrix(crop_matrix([100.0, 50.0], 0.5, 64, rotation=90.0), tf.constant([[150.0, 50.0]])).numpy()
    np.testing.assert_allclose(rotated[0], [31.5, 31.5 - 32.0], atol=1e-4)  # counter-clockwise: right -> up


def marker_images(size=(96, 120), num_joints=16, seed=0):
    """One image per joint with a bright blob at that joint; all share the same joints."""
    rng = np.random.default_rng(seed)
    joints = []
    while len(joints) < num_joints:  # markers at least 12 px apart, so a swapped channel cannot match by chance
        p = rng.uniform([25, 25], [size[1] - 25, size[0] - 25])
        if all(np.linalg.norm(p - q) >= 12 for q in joints):
            joints.append(p)
    joints = np.array(joints, np.float32)
    images = []
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    for x, y in joints:
        blob = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2))
        images.append(np.repeat((255 * blob)[..., None], 3, axis=2).astype(np.uint8))
    return joints, images


def source_from_arrays(images, joints, center, scale):
    n = len(images)
    k = len(joints)
    columns = {
        "image": [tf.io.encode_png(im).numpy() for im in images],
        "joints": np.repeat(joints[None], n, 0),
        "present": np.ones((n, k), bool),
        "visible": np.ones((n, k), bool),
        "center": np.tile(np.asarray(center, np.float32), (n, 1)),
        "scale": np.full(n, scale, np.float32),
        "normalizer": np.ones(n, np.float32),
        "id": [f"m{i}" for i in range(n)],
        "offset": np.zeros((n, 2), np.float32),
        "factor": np.ones((n, 2), np.float32),
    }
    return tf.data.Dataset.from_tensor_slices(columns)


def test_augmented_heatmap_peaks_land_on_their_markers_and_flips_swap_sides():
    joints, images = marker_images()
    codec = HeatmapCodec(64, 16)
    source = source_from_arrays(images, joints, center=[60.0, 48.0], scale=0.45)
    flips = 0
    for seed in range(4):
        dataset = pipeline.make_dataset(
            source,
            skeleton.MPII,
            1,
            16,
            input_size=64,
            seed=seed,
            augmentation=pipeline.Augmentation(color=0.0),
            with_meta=True,
        )
        crops, targets, meta = next(iter(dataset))
        perm = skeleton.MPII.flip_permutation
        for i in range(16):
            joint = int(meta["id"][i].numpy().decode()[1:])  # image "m{j}" shows only joint j's marker
            flipped = bool(meta["flip"][i])
            channel = perm[joint] if flipped else joint
            flips += flipped
            heat = targets["stack_1"][i, :, :, channel].numpy()
            crop = crops[i, :, :, 0].numpy()
            if heat.max() == 0:  # rotated/scaled out of the crop: the marker is gone or only its edge shows
                y, x = np.unravel_index(np.argmax(crop), crop.shape)
                assert crop.max() < 0.5 or min(x, y, crop.shape[1] - 1 - x, crop.shape[0] - 1 - y) <= 2
                continue
            peak = np.array(np.unravel_index(np.argmax(heat), heat.shape))[::-1]
            weights = np.where(crop > 0.3 * crop.max(), crop, 0.0)
            yy, xx = np.mgrid[0 : crop.shape[0], 0 : crop.shape[1]]
            centroid = np.array([(weights * xx).sum(), (weights * yy).sum()], np.float32) / weights.sum()
            marker = codec.input_to_heatmap(centroid).numpy()
            assert np.abs(peak - marker).max() <= 1.0, (seed, joint, peak, marker)
            # The other side's channel has no peak there: left and right really are swapped.
            if channel != joint:
                assert targets["stack_1"][i, :, :, joint].numpy()[peak[1], peak[0]] < 0.5
    assert flips > 0


def test_each_op_gives_the_same_result_eagerly_and_inside_tf_data():
    joints, images = marker_images(num_joints=16)
    source = source_from_arrays(images[:2], joints, center=[60.0, 48.0], scale=0.45)
    codec = HeatmapCodec(64, 16)
    perm = skeleton.MPII.flip_permutation
    aug = pipeline.Augmentation()
    seed = tf.constant([3, 4], tf.int64)
    element = next(iter(source))
    eager = pipeline.transform_sample(element, seed, codec, perm, aug)
    graph = next(iter(source.map(lambda e: pipeline.transform_sample(e, seed, codec, perm, aug))))
    np.testing.assert_allclose(eager[0].numpy(), graph[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(eager[1].numpy(), graph[1].numpy(), atol=1e-6)
    np.testing.assert_allclose(eager[2]["matrix"].numpy(), graph[2]["matrix"].numpy(), atol=1e-5)
    codec_graph = tf.function(codec.decode)(graph[1][None])
    np.testing.assert_allclose(codec.decode(eager[1][None])[0].numpy(), codec_graph[0].numpy())


# ---------------------------------------------------------------- synthetic set, real pipeline


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(root, num_train=24, num_valid=8, image_size=128, seed=3)
    return root


def test_synthetic_is_deterministic_by_seed_and_read_by_the_mpii_json_reader(tmp_path, synthetic_root):
    synthetic.generate(tmp_path / "again", num_train=3, num_valid=0, image_size=128, seed=3)
    synthetic.generate(tmp_path / "other", num_train=3, num_valid=0, image_size=128, seed=4)
    for i in range(3):
        name = f"images/train_{i:06d}.jpg"
        assert (tmp_path / "again" / name).read_bytes() == (synthetic_root / name).read_bytes()
        assert (tmp_path / "other" / name).read_bytes() != (synthetic_root / name).read_bytes()
    samples = readers.load_dataset("synthetic", synthetic_root, "train")
    assert len(samples) == 24 and samples[0].num_joints == 16
    assert all(np.isfinite(s.normalizer) and s.normalizer > 0 for s in samples)
    # The reader's centre/scale enclose the annotated joints (the person box, 1.25 x its extent).
    for s in samples:
        half = 100 * s.scale
        assert np.all(np.abs(s.joints[s.present] - s.center) <= half + 1e-3)


def test_pipeline_batches_for_fit_and_is_deterministic(synthetic_root):
    samples = readers.load_dataset("synthetic", synthetic_root, "train")
    source = pipeline.samples_to_dataset(samples, synthetic_root)

    def first_batch():
        dataset = pipeline.make_dataset(source, skeleton.MPII, num_stacks=2, batch_size=4, input_size=64, seed=5)
        return next(iter(dataset))

    (x1, y1), (x2, y2) = first_batch(), first_batch()
    assert x1.shape == (4, 64, 64, 3) and x1.dtype == tf.float32
    assert set(y1) == {"stack_1", "stack_2"} and y1["stack_1"].shape == (4, 16, 16, 16)
    np.testing.assert_array_equal(y1["stack_1"].numpy(), y1["stack_2"].numpy())
    np.testing.assert_array_equal(x1.numpy(), x2.numpy())
    np.testing.assert_array_equal(y1["stack_1"].numpy(), y2["stack_1"].numpy())
    assert 0.0 <= float(tf.reduce_min(x1)) and float(tf.reduce_max(x1)) <= 1.0


def test_a_stream_started_some_batches_in_yields_what_the_whole_stream_yields_from_there(synthetic_root):
    """What a resumed run relies on: ``skip`` elements passed over give the same later batches (images, shuffle
    order and augmentation), across the epoch boundary of the repeated source."""
    samples = readers.load_dataset("synthetic", synthetic_root, "train")
    source = pipeline.samples_to_dataset(samples, synthetic_root).repeat()

    def batches(skip):
        dataset = pipeline.make_dataset(
            source, skeleton.MPII, num_stacks=1, batch_size=4, input_size=32, seed=5, shuffle_buffer=8, skip=skip
        )
        return [x.numpy() for x, _ in dataset.take(12 - skip // 4)]

    whole, resumed = batches(0), batches(4 * 7)
    assert len(samples) < 4 * 7  # the skipped part crosses a pass over the source
    for a, b in zip(whole[7:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(whole[0], resumed[0])
    with pytest.raises(ValueError, match="received skip=-1"):
        pipeline.make_dataset(source, skeleton.MPII, num_stacks=1, batch_size=4, skip=-1)


def test_validation_meta_back_projects_to_the_original_joints(synthetic_root):
    samples = readers.load_dataset("synthetic", synthetic_root, "valid")
    source = pipeline.samples_to_dataset(samples, synthetic_root)
    dataset = pipeline.make_dataset(source, skeleton.MPII, 1, 8, input_size=64, training=False, with_meta=True)
    _, targets, meta = next(iter(dataset))
    for i, s in enumerate(samples):
        np.testing.assert_allclose(meta["joints"][i].numpy(), s.joints, atol=1e-3)
        back = apply_matrix(tf.linalg.inv(meta["matrix"][i]), meta["crop_joints"][i]).numpy()
        np.testing.assert_allclose(back[s.present], s.joints[s.present], atol=1e-2)
        assert meta["id"][i].numpy().decode() == s.sample_id


def test_tfrecord_shards_match_the_direct_pipeline(tmp_path, synthetic_root):
    samples = readers.load_dataset("synthetic", synthetic_root, "valid")
    report = tfrecords.write_shards(
        samples, synthetic_root, tmp_path, "valid", input_size=64, samples_per_shard=3, progress=False
    )
    assert report.kept == 8 and report.total_skipped == 0
    assert len(list(tmp_path.glob("valid-*-of-00003.tfrecord"))) == 3
    direct = pipeline.samples_to_dataset(samples, synthetic_root)
    shards = tfrecords.read_shards(tmp_path, "valid", 16)
    by_id = {}
    for name, source in (("direct", direct), ("shards", shards)):
        dataset = pipeline.make_dataset(source, skeleton.MPII, 1, 8, input_size=64, training=False, with_meta=True)
        crops, targets, meta = next(iter(dataset))
        for i in range(8):
            by_id.setdefault(meta["id"][i].numpy().decode(), {})[name] = (crops[i].numpy(), meta, i)
    assert len(by_id) == 8
    for entry in by_id.values():
        (crop_a, meta_a, i), (crop_b, meta_b, j) = entry["direct"], entry["shards"]
        np.testing.assert_allclose(meta_a["joints"][i].numpy(), meta_b["joints"][j].numpy(), atol=1e-2)
        np.testing.assert_allclose(meta_a["matrix"][i].numpy(), meta_b["matrix"][j].numpy(), atol=1e-3)
        np.testing.assert_allclose(meta_a["crop_joints"][i].numpy(), meta_b["crop_joints"][j].numpy(), atol=1e-2)
        assert np.abs(crop_a - crop_b).mean() < 0.03  # JPEG re-encoding only


# ---------------------------------------------------------------- bad samples


def _sample(path, **overrides):
    fields = dict(
        image_path=path,
        joints=np.full((16, 2), 30.0),
        present=np.ones(16, bool),
        visible=np.ones(16, bool),
        center=[32.0, 32.0],
        scale=0.3,
        normalizer=10.0,
        sample_id=path,
        dataset="mpii",
    )
    fields.update(overrides)
    return PoseSample(**fields)


def test_every_bad_sample_kind_is_skipped_and_counted(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    good = np.full((64, 64, 3), 128, np.uint8)
    cv2.imwrite(str(root / "images" / "good.jpg"), good)
    data = (root / "images" / "good.jpg").read_bytes()
    (root / "images" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "images" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "outside.jpg").write_bytes(data)
    cv2.imwrite(str(root / "images" / "gray.png"), good[..., 0])
    cv2.imwrite(str(root / "images" / "rgba.png"), np.dstack([good, np.full((64, 64), 255, np.uint8)]))
    cv2.imwrite(str(root / "images" / "deep.png"), (good.astype(np.uint16) * 257))
    far = np.full((16, 2), 30.0)
    far[3] = [5000.0, 30.0]
    samples = [
        _sample("images/good.jpg"),
        _sample("images/gray.png"),
        _sample("images/rgba.png"),
        _sample("images/deep.png"),
        _sample("images/truncated.jpg"),
        _sample("images/corrupt.jpg"),
        _sample("images/missing.jpg"),
        _sample("../outside.jpg"),
        _sample("images/good.jpg", scale=float("nan"), sample_id="nan-scale"),
        _sample("images/good.jpg", scale=0.0, sample_id="zero-scale"),
        _sample("images/good.jpg", scale=-1.0, sample_id="negative-scale"),
        _sample("images/good.jpg", present=np.zeros(16, bool), sample_id="no-joint"),
        _sample("images/good.jpg", joints=far, sample_id="far"),
    ]
    kept, report = pipeline.check_samples(samples, root)
    assert [s.sample_id for s in kept] == ["images/good.jpg", "images/gray.png", "images/rgba.png", "images/deep.png"]
    assert dict(report.skipped) == {
        "corrupt or unreadable image": 2,
        "missing image": 1,
        "image path escapes the dataset root": 1,
        "bad scale": 3,
        "no annotated joint": 1,
        "joints far outside the image": 1,
    }
    assert report.examples["bad scale"] == ["nan-scale", "zero-scale", "negative-scale"]
    assert "images/truncated.jpg" in report.examples["corrupt or unreadable image"]
    # The converted inputs decode to 8-bit RGB with the same content.
    source = pipeline.samples_to_dataset(kept, root)
    dataset = pipeline.make_dataset(source, skeleton.MPII, 1, 4, input_size=64, training=False)
    crops, _ = next(iter(dataset))
    centre = crops[:, 28:36, 28:36].numpy()
    np.testing.assert_allclose(centre, 128 / 255, atol=2 / 255)
    # The TFRecord writer applies the same checks and counts.
    shard_report = tfrecords.write_shards(samples, root, tmp_path / "tfr", "train", input_size=64, progress=False)
    assert shard_report.kept == 4 and dict(shard_report.skipped) == dict(report.skipped)
    assert json.loads(json.dumps(shard_report.as_dict()))["kept"] == 4


def test_interrupted_shard_writing_keeps_the_previous_shards(tmp_path, synthetic_root, monkeypatch):
    samples = readers.load_dataset("synthetic", synthetic_root, "valid")
    tfrecords.write_shards(samples, synthetic_root, tmp_path, "valid", input_size=64, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("valid-*.tfrecord")}

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tfrecords, "encode_record", boom)
    with pytest.raises(KeyboardInterrupt):
        tfrecords.write_shards(samples, synthetic_root, tmp_path, "valid", input_size=64, progress=False)
    after = {p.name: p.read_bytes() for p in tmp_path.glob("valid-*.tfrecord")}
    assert after == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_augmentation_rejects_bad_ranges():
    with pytest.raises(ValueError, match="scale_min=1.5"):
        pipeline.Augmentation(scale_min=1.5, scale_max=1.0)
    with pytest.raises(ValueError, match="rotation=-1"):
        pipeline.Augmentation(rotation=-1)
    with pytest.raises(ValueError, match="rotation_prob=1.5"):
        pipeline.Augmentation(rotation_prob=1.5)


@pytest.mark.parametrize("prob", [0.0, 0.4, 1.0])
def test_rotation_prob_is_the_fraction_of_rotated_samples(prob):
    aug = pipeline.Augmentation(rotation=30.0, rotation_prob=prob)
    angles = np.array([float(pipeline._random_params(tf.constant([7, i], tf.int64), aug)[0]) for i in range(1500)])
    rotated = angles != 0.0
    assert abs(rotated.mean() - prob) < 0.05, rotated.mean()
    if prob:
        assert np.abs(angles).max() <= 30.0 and np.abs(angles[rotated]).mean() > 10.0  # uniform in +-30 when rotated


def test_decoding_the_targets_and_back_projecting_gives_full_pckh(synthetic_root):
    from hourglass_tf import metrics
    from hourglass_tf.geometry import back_project as project

    def back_project(keypoints, matrices):
        return project(keypoints, matrices).numpy()

    samples = readers.load_dataset("synthetic", synthetic_root, "valid")
    source = pipeline.samples_to_dataset(samples, synthetic_root)
    dataset = pipeline.make_dataset(source, skeleton.MPII, 1, 8, input_size=64, training=False, with_meta=True)
    crops, targets, meta = next(iter(dataset))
    keypoints, _ = HeatmapCodec(64, 16).decode(targets["stack_1"])
    original = back_project(keypoints.numpy(), meta["matrix"].numpy())
    inside = np.asarray(tf.reduce_max(targets["stack_1"], axis=(1, 2)) > 0)
    result = metrics.evaluate(original, meta["joints"].numpy(), inside, meta["normalizer"].numpy(), skeleton.MPII)
    assert result["summary"]["Mean"] == 100.0
    # Back-projection is exact for the crop joints themselves.
    back = back_project(meta["crop_joints"].numpy(), meta["matrix"].numpy())
    present = meta["present"].numpy()
    np.testing.assert_allclose(back[present], meta["joints"].numpy()[present], atol=1e-2)


def test_symlinked_image_folders_are_allowed_but_dotdot_escapes_are_not(tmp_path):
    real = tmp_path / "elsewhere"
    real.mkdir()
    cv2.imwrite(str(real / "a.jpg"), np.full((64, 64, 3), 90, np.uint8))
    root = tmp_path / "data"
    root.mkdir()
    (root / "images").symlink_to(real, target_is_directory=True)
    kept, report = pipeline.check_samples([_sample("images/a.jpg"), _sample("images/../../elsewhere/a.jpg")], root)
    assert [s.image_path for s in kept] == ["images/a.jpg"]
    assert dict(report.skipped) == {"image path escapes the dataset root": 1}


def test_people_of_the_same_photo_decode_it_once(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(root / "images" / name), np.full((64, 64, 3), 100, np.uint8))
    calls = []
    original = pipeline.decode_image
    monkeypatch.setattr(pipeline, "decode_image", lambda data: calls.append(1) or original(data))
    samples = [_sample("images/a.jpg"), _sample("images/a.jpg"), _sample("images/b.jpg"), _sample("images/b.jpg")]
    kept, _ = pipeline.check_samples(samples, root)
    assert len(kept) == 4 and len(calls) == 2


# ---------------------------------------------------------------- failures after the check: counted or named


def _copy_with_a_broken_image(src, dst, split, index):
    import shutil

    shutil.copytree(src, dst)
    samples = readers.load_dataset("synthetic", dst, split)
    kept, report = pipeline.check_samples(samples, dst)
    assert report.total_skipped == 0
    (dst / samples[index].image_path).write_bytes(b"changed on disk after the check")
    return kept, samples[index].sample_id


def test_a_validation_sample_that_fails_is_named_not_dropped(tmp_path, synthetic_root):
    from hourglass_tf.inference import MissingSamplesError, Predictor, predict_dataset
    from hourglass_tf.model import build_model

    kept, broken = _copy_with_a_broken_image(synthetic_root, tmp_path / "data", "valid", 5)
    source = pipeline.samples_to_dataset(kept, tmp_path / "data")
    dataset = pipeline.make_dataset(source, skeleton.MPII, 1, 3, input_size=64, training=False, with_meta=True)
    predictor = Predictor(
        build_model(num_stacks=1, filters=16, depth=2, num_joints=16, input_size=64),
        skeleton=skeleton.MPII,
        flip_test=False,
    )
    with pytest.raises(MissingSamplesError, match=f"1 of 8 evaluation samples failed .*{broken}"):
        predict_dataset(predictor, dataset, progress=False, total=len(kept), source=source)
    intact = pipeline.samples_to_dataset(kept[:5], tmp_path / "data")  # the samples before it are fine
    data = pipeline.make_dataset(intact, skeleton.MPII, 1, 3, input_size=64, training=False, with_meta=True)
    assert len(predict_dataset(predictor, data, progress=False, total=5)["keypoints"]) == 5


def test_training_samples_that_fail_are_counted(tmp_path, synthetic_root):
    kept, _ = _copy_with_a_broken_image(synthetic_root, tmp_path / "data", "train", 7)
    source = pipeline.samples_to_dataset(kept, tmp_path / "data")
    failures = pipeline.FailureCount()
    dataset = pipeline.make_dataset(source.repeat(2), skeleton.MPII, 1, 4, input_size=64, failures=failures)
    images = sum(len(x) for x, _ in dataset)
    assert images == 44 and failures.total() == 2  # 2 passes x 23 good samples, batches of 4; the bad one twice
    assert failures.since_last() == 2 and failures.since_last() == 0


def test_training_stops_with_a_clear_error_when_every_sample_fails_instead_of_looping(tmp_path, synthetic_root):
    import shutil

    import tensorflow as tf

    kept, _ = _copy_with_a_broken_image(synthetic_root, tmp_path / "data", "train", 0)
    source = pipeline.samples_to_dataset(kept, tmp_path / "data")
    shutil.rmtree(tmp_path / "data" / "images")  # the folder moved away after the check, mid-run
    failures = pipeline.FailureCount(max_in_a_row=10)
    dataset = pipeline.make_dataset(source.repeat(), skeleton.MPII, 1, 4, input_size=64, failures=failures)
    batches = iter(dataset)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"10 {pipeline.FAILURES_IN_A_ROW}"):
        next(batches)  # an infinite source that never yields: stopped, not looped over
    # the count is the samples up to the stop, however far the parallel batching had pulled ahead, and asking
    # again says the same without counting more
    assert failures.total() == 10
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"10 {pipeline.FAILURES_IN_A_ROW}"):
        next(batches)
    assert failures.total() == 10


def test_fewer_failures_in_a_row_than_the_limit_are_counted_and_training_goes_on(tmp_path, synthetic_root):
    kept, _ = _copy_with_a_broken_image(synthetic_root, tmp_path / "data", "train", 3)
    for sample in kept[4:7]:  # four in a row: 3, 4, 5, 6
        (tmp_path / "data" / sample.image_path).write_bytes(b"broken")
    source = pipeline.samples_to_dataset(kept, tmp_path / "data")
    failures = pipeline.FailureCount(max_in_a_row=5)
    dataset = pipeline.make_dataset(source, skeleton.MPII, 1, 4, input_size=64, failures=failures)
    assert sum(len(x) for x, _ in dataset) == 20 and failures.total() == 4


def test_the_plateau_rule_counts_only_validated_epochs():
    import keras

    from hourglass_tf.callbacks import ValidatedPlateau

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    plateau = ValidatedPlateau(monitor="val_pck", mode="max", factor=0.5, patience=2, verbose=0)
    plateau.set_model(model)
    plateau.on_train_begin()
    logs = [{"val_pck": 50.0}, {}, {}, {}, {"val_pck": 50.0}, {}, {"val_pck": 50.0}]
    rates = []
    for epoch, entry in enumerate(logs):
        plateau.on_epoch_end(epoch, dict(entry))
        rates.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
    # Two validations without improvement after the first: the rate halves at the third validation only.
    assert rates == [1.0] * 6 + [0.5], rates


def test_a_resumed_plateau_rule_drops_the_rate_when_the_unkilled_run_would():
    """Replaying the logged validations (``plateau_history``) restores the stock rule's counters: the resumed run's
    rates equal the unkilled run's at every split point, where a rule counting afresh drops late. Fails when
    Keras' ``ReduceLROnPlateau`` changes how it counts."""
    import keras

    from hourglass_tf.callbacks import ValidatedPlateau

    values = [40.0, 45.0, 44.0, 44.5, 46.0, 45.0, 45.5, 45.9, 46.5, 46.0, 46.1, 46.2, 46.3]

    def run(values, history=(), rate=1.0):
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(rate), loss="mse")
        plateau = ValidatedPlateau(
            monitor="val_pck", mode="max", factor=0.5, patience=2, cooldown=1, min_lr=0.2, history=history
        )
        plateau.set_model(model)
        plateau.on_train_begin()
        logged = []
        for epoch, value in enumerate(values, start=len(history)):
            logs = {"val_pck": value}
            plateau.on_epoch_end(epoch, logs)
            logged.append((value, logs["learning_rate"]))  # what CSVLogger writes: the rate before this epoch's drop
        return logged, float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))

    unkilled, _ = run(values)
    rates = [rate for _, rate in unkilled]
    assert len(set(rates)) >= 3, rates  # the sequence drops more than once, down to min_lr
    for split in range(1, len(values)):
        _, rate_at_split = run(values[:split])
        resumed, _ = run(values[split:], history=unkilled[:split], rate=rate_at_split)
        assert [r for _, r in resumed] == rates[split:], split
    # counting afresh (the stock callback after a kill) forgets the best value and the waiting: later drops
    afresh = [[r for _, r in run(values[split:], rate=run(values[:split])[1])[0]] for split in range(1, len(values))]
    assert sum(a != rates[split:] for split, a in enumerate(afresh, start=1)) >= len(values) // 2
