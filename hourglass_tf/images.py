"""Photo size limits: a photo whose header declares more than ``MAX_IMAGE_PIXELS`` is refused before decoding.

A few kilobytes of PNG or JPEG can declare 100,000 x 100,000 pixels, which decoding would try to allocate
(30 GB): a decompression bomb. Every place the package decodes a photo checks the header first: the Python
reader (``people.read_rgb``: ``predict.py``, the estimator), the training pipeline and the SavedModel's
signatures (in the graph, so TF Serving refuses the request instead of exhausting its memory).
"""

import io
import struct
import warnings

import tensorflow as tf

MAX_IMAGE_PIXELS = 100_000_000  # 100 megapixels: a 12,000 x 8,300 photo fits; Pillow warns from 89 M


class ImageTooLargeError(ValueError):
    """A photo's header declares more than ``MAX_IMAGE_PIXELS`` pixels."""


def too_large_message(width, height, limit=MAX_IMAGE_PIXELS):
    return (
        f"the photo declares {width} x {height} = {width * height:,} pixels, more than the {limit:,} "
        "allowed (a decompression bomb?); refused before decoding"
    )


_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data):
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_FRAMES:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker in (0x01, *range(0xD0, 0xD9)):  # no length field
            i += 2
            continue
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def header_size(data):
    """(width, height) declared by an encoded photo's header, read without decoding: JPEG, PNG, GIF and BMP
    directly (as ``header_size_tf`` does in the graph), other formats through Pillow's header reader; None when
    unknown (then the decoder's own limits apply)."""
    data = bytes(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:3] == b"GIF" and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    from PIL import Image

    with warnings.catch_warnings():  # Pillow's own bomb warning: the caller's limit decides
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.size
        except Image.DecompressionBombError as error:  # beyond twice Pillow's limit, which is beyond ours
            raise ImageTooLargeError(f"{error}; refused before decoding") from None
        except Exception:  # noqa: BLE001 - not a format Pillow reads; the decoder decides
            return None


def check_size(data, name, limit=MAX_IMAGE_PIXELS):
    """Raises ``ImageTooLargeError`` naming ``name`` when ``data``'s header declares more than ``limit`` pixels."""
    try:
        size = header_size(data)
    except ImageTooLargeError as error:
        raise ImageTooLargeError(f"{name}: {error}") from None
    if size is not None and size[0] * size[1] > limit:
        raise ImageTooLargeError(f"{name}: {too_large_message(*size, limit)}")


def _number(data, start, length, big_endian):
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, start, length), tf.uint8), tf.int64)
    raw = tf.concat([raw, tf.zeros([length], tf.int64)], axis=0)[:length]  # a short header reads as zeros
    order = range(length) if big_endian else range(length - 1, -1, -1)
    value = tf.constant(0, tf.int64)
    for i in order:
        value = value * 256 + raw[i]
    return value


def header_size_tf(data):
    """In the graph: (height, width) int64 from a JPEG, PNG, GIF or BMP header; (0, 0) for anything else (the
    decoder then refuses it)."""
    magic = tf.strings.substr(data, 0, 4)

    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64)

    def png():  # IHDR: width, height as big-endian uint32 at bytes 16 and 20
        return tf.stack([_number(data, 20, 4, True), _number(data, 16, 4, True)])

    def gif():  # logical screen: little-endian uint16 at bytes 6 and 8
        return tf.stack([_number(data, 8, 2, False), _number(data, 6, 2, False)])

    def bmp():  # BITMAPINFOHEADER: little-endian int32 at 18 and 22 (height may be negative: top-down)
        height = _number(data, 22, 4, False)
        height = tf.where(height >= 2**31, 2**32 - height, height)
        return tf.stack([height, _number(data, 18, 4, False)])

    return tf.case(
        [
            (tf.io.is_jpeg(data), jpeg),
            (tf.equal(magic, b"\x89PNG"), png),
            (tf.equal(tf.strings.substr(magic, 0, 3), b"GIF"), gif),
            (tf.equal(tf.strings.substr(magic, 0, 2), b"BM"), bmp),
        ],
        default=lambda: tf.zeros([2], tf.int64),
        exclusive=True,
    )


def checked_tf(data, limit=MAX_IMAGE_PIXELS):
    """``data`` (a scalar string tensor), passed on only when its header declares at most ``limit`` pixels;
    otherwise the graph fails with InvalidArgumentError saying so."""
    size = header_size_tf(data)
    check = tf.debugging.assert_less_equal(
        size[0] * size[1],
        tf.constant(limit, tf.int64),
        message=f"the photo declares more than {limit:,} pixels (a decompression bomb?); refused before decoding",
    )
    with tf.control_dependencies([check]):
        return tf.identity(data)
