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

from benchmarks.reliability import bmp_bomb, gif_bomb, jpeg_bomb, png_bomb, webp_bomb
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
        "lossless.webp": (cv2.imencode(".webp", RGB[..., ::-1], [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes(), RGB),
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


BOMBS = {
    "png": png_bomb,
    "jpeg": jpeg_bomb,
    "gif": gif_bomb,  # a 12,000 x 12,000 logical screen
    "gif frames": lambda: gif_bomb(4000, 4000, frames=7),  # 16 MP a frame, 112 MP in all
    "bmp": bmp_bomb,
    "webp": webp_bomb,
    "webp frames": lambda: webp_bomb(8000, 8000, frames=2),  # an animated 64 MP canvas, 128 MP in all
}


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_a_decompression_bomb_of_every_kind_is_refused_before_decoding_everywhere(tmp_path, kind):
    data = BOMBS[kind]()
    path = tmp_path / "bomb.img"
    path.write_bytes(data)
    assert len(data) < 4000  # a few kilobytes that would decode to gigabytes
    with pytest.raises(images.ImageTooLargeError, match=r"bomb.img: .*pixels.*refused before decoding"):
        read_rgb(path)
    for decode in (decode_photo, decode_image):  # the SavedModel's decoder and the training pipeline's
        with pytest.raises(tf.errors.InvalidArgumentError, match="decompression bomb"):
            decode(tf.constant(data))
    pixels = images.declared_pixels(data)
    assert int(images.declared_pixels_tf(tf.constant(data)).numpy()) == pixels  # one rule in both places
    with pytest.raises(images.ImageTooLargeError):  # the limit is the only reason: a higher one lets it pass
        images.check_size(data, "x", limit=images.MAX_IMAGE_PIXELS)
    images.check_size(data, "x", limit=pixels)


def _animated(fmt, frames=3):
    out = io.BytesIO()
    pictures = [Image.fromarray(np.roll(RGB, 5 * i, axis=1)) for i in range(frames)]  # distinct, so all are kept
    pictures[0].save(out, format=fmt, save_all=True, append_images=pictures[1:])
    return out.getvalue()


def test_every_frame_of_an_animated_gif_or_webp_counts_in_python_and_in_the_graph():
    for fmt in ("GIF", "WEBP"):
        data = _animated(fmt)
        pixels = 3 * RGB.shape[0] * RGB.shape[1]
        assert images.declared_pixels(data) == pixels, fmt
        assert int(images.declared_pixels_tf(tf.constant(data)).numpy()) == pixels, fmt
        with pytest.raises(images.ImageTooLargeError, match="frames declare"):
            images.check_size(data, "x", limit=pixels - 1)
    first = decode_photo(tf.constant(_animated("GIF"))).numpy()  # the first frame is what is read
    assert first.shape == RGB.shape


@pytest.mark.parametrize("name,data", [("garbage", b"\x00\x01 not a photo header " * 20), ("short", b"GI")])
def test_a_header_the_package_cannot_read_is_refused_not_waved_through(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(images.UnreadableImageError, match=f"{name}: not a photo whose header"):
        read_rgb(tmp_path / name)
    for decode in (decode_photo, decode_image):
        with pytest.raises(tf.errors.InvalidArgumentError, match="not a photo whose header can be read"):
            decode(tf.constant(data))


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
