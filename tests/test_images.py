"""Photos of every kind a user has: grayscale, RGBA, 16-bit, BMP, GIF; truncated and corrupt files; and
decompression bombs (a small file whose header declares a huge image), refused before decoding."""

import io
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from benchmarks.reliability import jpeg_bomb, png_bomb
from conftest import REPO
from hourglass_tf import images
from hourglass_tf.data.pipeline import decode_image
from hourglass_tf.export import decode_photo
from hourglass_tf.people import read_rgb

pytestmark = pytest.mark.reliability

RGB = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def _png(array):
    return cv2.imencode(".png", array)[1].tobytes()


def _gif(array):
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="GIF")
    return out.getvalue()


def _kinds():
    gray = RGB[..., 0]
    rgba = np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 7, np.uint8)])
    deep = RGB[..., ::-1].astype(np.uint16) * 257  # 16-bit: 255 -> 65535
    return {
        "rgb.png": (_png(RGB[..., ::-1]), RGB),
        "gray.png": (_png(gray), np.repeat(gray[..., None], 3, axis=-1)),
        "rgba.png": (_png(rgba), RGB),
        "16bit.png": (_png(deep), RGB),
        "rgb.bmp": (cv2.imencode(".bmp", RGB[..., ::-1])[1].tobytes(), RGB),
    }


@pytest.mark.parametrize("name", sorted(_kinds()))
def test_every_kind_of_photo_reads_as_8_bit_rgb_in_python_and_in_the_graph(tmp_path, name):
    data, expected = _kinds()[name]
    (tmp_path / name).write_bytes(data)
    np.testing.assert_array_equal(read_rgb(tmp_path / name), expected)
    np.testing.assert_array_equal(decode_photo(tf.constant(data)).numpy(), expected)  # the SavedModel's decoder
    np.testing.assert_array_equal(decode_image(tf.constant(data)).numpy(), expected)  # the training pipeline's


@pytest.mark.parametrize(
    "name,data",
    [
        ("rgb.png", _png(RGB)),
        ("rgb.jpg", cv2.imencode(".jpg", RGB)[1].tobytes()),
        ("rgb.bmp", cv2.imencode(".bmp", RGB)[1].tobytes()),
        ("rgb.gif", _gif(RGB)),
        ("png bomb", png_bomb(50_000, 20_000)),
        ("jpeg bomb", jpeg_bomb(30_000, 25_000)),
    ],
)
def test_header_sizes_are_read_without_decoding(name, data):
    expected = {"png bomb": (20_000, 50_000), "jpeg bomb": (25_000, 30_000)}.get(name, RGB.shape[:2])
    assert tuple(images.header_size_tf(tf.constant(data)).numpy()) == expected
    if "bomb" not in name:
        assert images.header_size(data) == expected[::-1]


@pytest.mark.parametrize("make", [png_bomb, jpeg_bomb])
def test_a_decompression_bomb_is_refused_before_decoding_everywhere(tmp_path, make):
    data = make()
    path = tmp_path / "bomb.img"
    path.write_bytes(data)
    assert len(data) < 4000  # a few kilobytes that would decode to gigabytes
    with pytest.raises(images.ImageTooLargeError, match=r"bomb.img: .*pixels.*refused before decoding"):
        read_rgb(path)
    for decode in (decode_photo, decode_image):
        with pytest.raises(tf.errors.InvalidArgumentError, match="decompression bomb"):
            decode(tf.constant(data))
    under = images.MAX_IMAGE_PIXELS  # the limit is the only reason: a higher one lets the header pass
    with pytest.raises(images.ImageTooLargeError):
        images.check_size(data, "x", limit=under)
    images.check_size(data, "x", limit=50_000**2)


def test_truncated_and_corrupt_photos_are_named(tmp_path):
    jpeg = cv2.imencode(".jpg", RGB)[1].tobytes()
    cases = {"empty.jpg": b"", "text.jpg": b"not an image at all", "cut.png": _png(RGB)[:40]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=name):
            read_rgb(tmp_path / name)
    with pytest.raises(ValueError, match="missing.jpg"):
        read_rgb(tmp_path / "missing.jpg")
    (tmp_path / "half.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # decoders fill a cut JPEG in grey: still read
    assert read_rgb(tmp_path / "half.jpg").shape == RGB.shape


def test_predict_cli_skips_a_bomb_with_a_clear_line_and_processes_the_rest(tmp_path):
    from hourglass_tf.metadata import describe, save_keras
    from hourglass_tf.model import build_model
    from hourglass_tf.skeleton import MPII

    model = build_model(num_stacks=1, filters=16, depth=2, num_joints=16, input_size=64)
    save_keras(model, tmp_path / "m.keras", describe(model, MPII))
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "bomb.png").write_bytes(png_bomb())
    (photos / "ok.png").write_bytes(_png(RGB))
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "predict.py"),
            f"--model={tmp_path / 'm.keras'}",
            f"--output_dir={tmp_path / 'out'}",
            "--detector=none",
            str(photos),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert "bomb.png" in output and "refused before decoding" in output, output[-2000:]
    assert "Traceback" not in output
    assert (tmp_path / "out" / "ok.json").exists() and not (tmp_path / "out" / "bomb.json").exists()
