"""Photo size limits: a photo whose header declares more than ``MAX_IMAGE_PIXELS`` is refused before decoding.

A few kilobytes of PNG or JPEG can declare 100,000 x 100,000 pixels, which decoding would try to allocate
(30 GB): a decompression bomb; so can an animated GIF or WebP of many frames. Every place the package decodes a
photo checks the header first: the Python reader (``people.read_rgb``: ``predict.py``, the estimator), the
training pipeline and the SavedModel's signatures (in the graph, so TF Serving refuses the request instead of
exhausting its memory). The checks fail closed: a header they cannot read is refused, not waved through.
"""

import functools
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


def _webp_size(data):
    """(width, height, animated) from a WebP's first chunk (VP8, VP8L or VP8X), or None."""
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF, False
    if chunk == b"VP8L":
        b0, b1, b2, b3 = data[21:25]
        return 1 + (((b1 & 0x3F) << 8) | b0), 1 + (((b3 & 0x0F) << 10) | (b2 << 2) | ((b1 & 0xC0) >> 6)), False
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height, bool(data[20] & 0x02)
    return None


def _webp_frames(data):
    """ANMF chunks (frames) of an animated WebP, walking its RIFF chunks."""
    pos, frames = 12, 0
    while pos + 8 <= len(data):
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        frames += data[pos : pos + 4] == b"ANMF"
        pos += 8 + size + (size & 1)
    return frames


def _gif_pixels(data):
    """Pixels every frame of a GIF decodes to (each at least the logical screen), walking its blocks."""
    width, height = struct.unpack("<HH", data[6:10])
    screen = width * height
    packed = data[10]
    pos = 13 + ((3 << ((packed & 7) + 1)) if packed & 0x80 else 0)
    total = 0
    while pos < len(data):
        tag = data[pos]
        if tag == 0x21:  # extension: label, then data sub-blocks
            pos += 2
        elif tag == 0x2C:  # image descriptor: left, top, width, height, packed; colour table; LZW code size
            if pos + 10 > len(data):
                break
            frame_w, frame_h = struct.unpack("<HH", data[pos + 5 : pos + 9])
            total += max(frame_w * frame_h, screen)
            flags = data[pos + 9]
            pos += 10 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0) + 1
        else:  # the trailer (0x3B), or something the decoder will refuse
            break
        while pos < len(data) and data[pos] != 0:  # data sub-blocks, each led by its length
            pos += data[pos] + 1
        pos += 1
    return max(total, screen)


class UnreadableImageError(ValueError):
    """A photo's header is not one the package can read, so its size cannot be checked: refused."""


FORMATS = "JPEG, PNG, GIF, BMP, WebP"


def header_size(data):
    """(width, height) declared by an encoded photo's header, read without decoding: JPEG, PNG, GIF (its logical
    screen), BMP and WebP directly (as ``header_size_tf`` does in the graph), other formats through Pillow's
    header reader; None when no header can be read."""
    data = bytes(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:3] == b"GIF" and len(data) >= 13:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data[:4] == b"RIFF":
        webp = _webp_size(data)
        return None if webp is None else webp[:2]
    from PIL import Image

    with warnings.catch_warnings():  # Pillow's own bomb warning: the caller's limit decides
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.size
        except Image.DecompressionBombError as error:  # beyond twice Pillow's limit, which is beyond ours
            raise ImageTooLargeError(f"{error}; refused before decoding") from None
        except Exception:  # noqa: BLE001 - not a format Pillow reads
            return None


def declared_pixels(data):
    """Pixels decoding ``data`` would produce, from its header alone: width x height, summed over every frame of
    an animated GIF or WebP. Raises ``UnreadableImageError`` when no header can be read (fail closed)."""
    data = bytes(data)
    size = header_size(data)
    if size is None:
        raise UnreadableImageError(f"not a photo whose header the package can read ({FORMATS} or what Pillow reads)")
    if data[:3] == b"GIF":
        return _gif_pixels(data)
    if data[:4] == b"RIFF" and _webp_size(data)[2]:
        return size[0] * size[1] * max(1, _webp_frames(data))
    return size[0] * size[1]


def check_size(data, name, limit=MAX_IMAGE_PIXELS):
    """Raises ``ImageTooLargeError`` naming ``name`` when ``data``'s header declares more than ``limit`` pixels,
    ``UnreadableImageError`` when it has no header the package can read; both before anything is decoded."""
    try:
        pixels = declared_pixels(data)
    except ValueError as error:
        raise type(error)(f"{name}: {error}") from None
    if pixels > limit:
        size = header_size(data)
        if pixels == size[0] * size[1]:
            raise ImageTooLargeError(f"{name}: {too_large_message(*size, limit)}")
        raise ImageTooLargeError(
            f"{name}: its frames declare {pixels:,} pixels in all, more than the {limit:,} allowed "
            "(a decompression bomb?); refused before decoding"
        )


def _number(data, start, length, big_endian):
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, start, length), tf.uint8), tf.int64)
    raw = tf.concat([raw, tf.zeros([length], tf.int64)], axis=0)[:length]  # a short header reads as zeros
    order = range(length) if big_endian else range(length - 1, -1, -1)
    value = tf.constant(0, tf.int64)
    for i in order:
        value = value * 256 + raw[i]
    return value


def _byte_reader(data):
    """``at(i)``: the byte at ``i`` of ``data`` as int64 (0 past the end), and the length."""
    raw = tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int64)
    length = tf.size(raw, out_type=tf.int64)

    def at(i):
        i = tf.cast(i, tf.int64)
        return tf.where(i < length, tf.gather(raw, tf.minimum(i, tf.maximum(length - 1, 0))), tf.constant(0, tf.int64))

    return at, length


def _gif_pixels_tf(data):
    """In the graph: ``_gif_pixels``, the same walk over the GIF's blocks."""
    at, length = _byte_reader(data)
    screen = (at(6) + 256 * at(7)) * (at(8) + 256 * at(9))
    packed = at(10)
    start = 13 + tf.where(packed >= 128, 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), packed % 8), 0)

    def body(pos, in_blocks, total, done):
        tag = at(pos)
        frame = (at(pos + 5) + 256 * at(pos + 6)) * (at(pos + 7) + 256 * at(pos + 8))
        flags = at(pos + 9)
        table = tf.where(flags >= 128, 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), flags % 8), 0)
        # in data sub-blocks: skip one (its length byte leads), or leave them at the 0 terminator
        sub_next = tf.where(tag == 0, pos + 1, pos + tag + 1)
        block_next = tf.where(tag == 0x21, pos + 2, pos + 10 + table + 1)
        is_block = tf.logical_or(tag == 0x21, tag == 0x2C)
        new_pos = tf.where(in_blocks, sub_next, block_next)
        new_in_blocks = tf.where(in_blocks, tag != 0, is_block)
        counted = tf.logical_and(tf.logical_not(in_blocks), tag == 0x2C)
        new_total = total + tf.where(counted, tf.maximum(frame, screen), 0)
        new_done = tf.logical_and(tf.logical_not(in_blocks), tf.logical_not(is_block))
        return new_pos, new_in_blocks, new_total, new_done

    def running(pos, in_blocks, total, done):
        return tf.logical_and(pos < length, tf.logical_not(done))

    _, _, total, _ = tf.while_loop(
        running,
        body,
        (start, tf.constant(False), tf.constant(0, tf.int64), tf.constant(False)),
        maximum_iterations=tf.cast(length + 1, tf.int32),
    )
    return tf.maximum(total, screen)


def _webp_pixels_tf(data):
    """In the graph: a WebP's canvas pixels, times its ANMF frames when animated; -1 for an unknown first chunk."""
    at, length = _byte_reader(data)
    chunk = tf.strings.substr(data, 12, 4)

    def le(start, count):
        value = tf.constant(0, tf.int64)
        for i in range(count - 1, -1, -1):
            value = value * 256 + at(start + i)
        return value

    vp8 = (le(26, 2) % 16384) * (le(28, 2) % 16384)
    b0, b1, b2, b3 = at(21), at(22), at(23), at(24)
    vp8l = (1 + (b1 % 64) * 256 + b0) * (1 + (b3 % 16) * 1024 + b2 * 4 + b1 // 64)
    canvas = (1 + le(24, 3)) * (1 + le(27, 3))
    animated = tf.equal(tf.bitwise.bitwise_and(at(20), 2), 2)

    def frames():
        def body(pos, count):
            size = le(pos + 4, 4)
            is_frame = tf.equal(tf.strings.substr(data, tf.cast(pos, tf.int32), 4), b"ANMF")
            return pos + 8 + size + size % 2, count + tf.cast(is_frame, tf.int64)

        _, count = tf.while_loop(
            lambda pos, count: pos + 8 <= length,
            body,
            (tf.constant(12, tf.int64), tf.constant(0, tf.int64)),
            maximum_iterations=tf.cast(length, tf.int32),
        )
        return tf.maximum(count, 1)

    vp8x = canvas * tf.cond(animated, frames, lambda: tf.constant(1, tf.int64))
    return tf.case(
        [(tf.equal(chunk, b"VP8 "), lambda: vp8), (tf.equal(chunk, b"VP8L"), lambda: vp8l)],
        default=lambda: tf.where(tf.equal(chunk, b"VP8X"), vp8x, tf.constant(-1, tf.int64)),
        exclusive=True,
    )


def header_size_tf(data):
    """In the graph: (height, width) int64 from a JPEG, PNG, GIF or BMP header; (0, 0) for anything else."""
    jpeg_data = data
    data = tf.strings.join([data, tf.constant(b"\0" * 32)])  # a short header reads zeros, not out of range
    magic = tf.strings.substr(data, 0, 4)

    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(jpeg_data)[:2], tf.int64)

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


def declared_pixels_tf(data):
    """In the graph: ``declared_pixels`` for the formats TensorFlow decodes (JPEG, PNG, GIF with every frame, BMP,
    WebP with every frame); -1 for anything else."""
    padded = tf.strings.join([data, tf.constant(b"\0" * 32)])  # a short string reads zeros, not out of range
    magic = tf.strings.substr(padded, 0, 4)
    is_webp = tf.logical_and(tf.equal(magic, b"RIFF"), tf.equal(tf.strings.substr(padded, 8, 4), b"WEBP"))
    is_gif = tf.equal(tf.strings.substr(magic, 0, 3), b"GIF")
    is_other = tf.logical_or(
        tf.io.is_jpeg(data),
        tf.logical_or(tf.equal(magic, b"\x89PNG"), tf.equal(tf.strings.substr(magic, 0, 2), b"BM")),
    )  # a header cut inside its size fields reads zeros there; the decoder then refuses the file

    def plain():
        size = header_size_tf(data)
        return size[0] * size[1]

    return tf.case(
        [(is_gif, lambda: _gif_pixels_tf(data)), (is_webp, lambda: _webp_pixels_tf(padded)), (is_other, plain)],
        default=lambda: tf.constant(-1, tf.int64),
        exclusive=True,
    )


def checked_tf(data, limit=MAX_IMAGE_PIXELS):
    """``data`` (a scalar string tensor), passed on only when its header is one the graph reads and declares at
    most ``limit`` pixels (every frame counted); otherwise the graph fails with InvalidArgumentError saying so.

    The check is one ``tf.function`` per ``limit``, traced once in the process and called from every graph that
    decodes a photo (each training or validation pipeline, each SavedModel signature): tracing its GIF and WebP
    frame loops costs 0.4-1 s, which a training run otherwise paid for each of its pipelines' traces."""
    return _check_function(int(limit))(tf.convert_to_tensor(data, tf.string))


@functools.cache
def _check_function(limit):
    def check(data):
        pixels = declared_pixels_tf(data)
        known = tf.debugging.assert_greater_equal(
            pixels,
            tf.constant(0, tf.int64),
            message=f"not a photo whose header can be read ({FORMATS}); refused before decoding",
        )
        with tf.control_dependencies([known]):
            too_many = f"the photo declares more than {limit:,} pixels (a decompression bomb?); refused before decoding"
            within = tf.debugging.assert_less_equal(pixels, tf.constant(limit, tf.int64), message=too_many)
        with tf.control_dependencies([within]):
            return tf.identity(data)

    return tf.function(check, input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
