"""Decode, convert grey to RGB and resize images once, into a uint8 array held in memory.

At the paper's 128x128 every dataset here fits in memory (HAM10000: 0.5 GB), so each file is
decoded once with a clear error naming it, and the training pipeline only gathers, augments and
scales. Decoding runs in a few threads (TensorFlow's decoders release the GIL).
"""

import concurrent.futures
import os
import struct
import sys
import time

import numpy as np
import tensorflow as tf

from mail_tf.data.sources import DataError


def to_rgb_uint8(images, size):
    """(N, H, W, C) uint8, any H, W and C in {1, 2, 3, 4} -> (N, size, size, 3) uint8.

    Grey (and grey + alpha) becomes RGB, alpha is dropped, and other sizes are resized (bilinear, antialiased) and
    rounded back to uint8. Graph-safe with unknown shapes: the exported serving signature applies
    exactly this to its inputs, so served images are preprocessed as the training images were.
    """
    x = tf.convert_to_tensor(images)
    channels = tf.shape(x)[-1]
    x = tf.cond(tf.less_equal(channels, 2), lambda: tf.image.grayscale_to_rgb(x[..., :1]), lambda: x[..., :3])
    x = tf.ensure_shape(x, [None, None, None, 3])

    def resize():
        y = tf.image.resize(tf.cast(x, tf.float32), (size, size), method="bilinear", antialias=True)
        return tf.cast(tf.round(tf.clip_by_value(y, 0.0, 255.0)), tf.uint8)

    same = tf.logical_and(tf.equal(tf.shape(x)[1], size), tf.equal(tf.shape(x)[2], size))
    return tf.ensure_shape(tf.cond(same, lambda: tf.cast(x, tf.uint8), resize), [None, size, size, 3])


def _to_uint8_rgb(images, size):
    """(N, H, W[, C]) images -> (N, size, size, 3) uint8 numpy."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or not 1 <= images.shape[-1] <= 4:
        raise DataError(f"images of shape {images.shape}: expected (N, H, W) or (N, H, W, C) with 1 (grey), "
                        "2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels")
    if images.dtype != np.uint8:
        raise DataError(f"images of dtype {images.dtype}: expected uint8 in [0, 255]")
    return to_rgb_uint8(images, size).numpy()


# Decoding costs ~55 bytes per pixel at its peak, so a small file claiming a huge size (a
# decompression bomb) could take the machine's memory: images above this are refused unread.
MAX_PIXELS = int(os.environ.get("MAIL_TF_MAX_IMAGE_PIXELS", 64_000_000))
FORMATS = "JPEG, PNG, BMP, GIF or WebP"


def header_size(data):
    """(width, height) from a PNG, GIF, BMP or JPEG header, or None if the format is not recognised."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data[:2] == b"\xff\xd8":
        try:
            height, width, _ = tf.io.extract_jpeg_shape(data).numpy()
            return int(width), int(height)
        except tf.errors.OpError:
            return None
    return None


def refuse_huge(data, name):
    """The (width, height) of the header (None if not recognised); DataError naming `name` above MAX_PIXELS."""
    size = header_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise DataError(f"{name}: {size[0]}x{size[1]} pixels is more than the {MAX_PIXELS:,} allowed per image "
                        "(raise MAIL_TF_MAX_IMAGE_PIXELS to accept it)")
    return size


def read_bytes(item):
    """A path's bytes (DataError naming it if unreadable), or the encoded image itself."""
    if isinstance(item, bytes):
        return item
    try:
        with open(item, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"{item}: cannot read the file ({e.strerror or e})") from None


def decode_bytes(data, name, channels=0):
    """Encoded image bytes -> (H, W, C) uint8 tensor; DataError naming `name` if the file is too large
    (`MAIL_TF_MAX_IMAGE_PIXELS`) or cannot be decoded."""
    refuse_huge(data, name)
    try:
        return tf.io.decode_image(data, channels=channels, dtype=tf.uint8, expand_animations=False)
    except tf.errors.OpError:
        raise DataError(f"{name}: cannot decode the image; expected a {FORMATS} file that is not damaged") from None


def check_header(item, name):
    """Refuse (DataError naming `name`) a file or encoded image whose header is not an image's or
    claims more than MAX_PIXELS, without decoding it (the streaming path decodes later)."""
    data = read_bytes(item)
    if refuse_huge(data, name) is None and not (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        raise DataError(f"{name}: not a {FORMATS} file (its header is not an image's)")


def decode_file(path, size, name=None):
    """One image file (a path, or its encoded bytes as a TFDS dataset stores them) -> (size, size, 3)
    uint8; DataError naming the file (or `name`) if it cannot be read."""
    name = name or ("an encoded image" if isinstance(path, bytes) else path)
    return _to_uint8_rgb(decode_bytes(read_bytes(path), name, channels=3)[None], size)[0]


def load_images(images, size, skip_bad=False, label="", names=None):
    """Paths, encoded images (bytes) or an array -> ((N, size, size, 3) uint8, kept index). With
    `skip_bad`, unreadable files are left out and reported; otherwise the first one raises a
    DataError naming it (its path, or for bytes `names[i]`)."""
    if isinstance(images, np.ndarray):
        return _to_uint8_rgb(images, size), np.arange(len(images))
    out = np.zeros((len(images), size, size, 3), np.uint8)
    bad = []
    start, done = time.monotonic(), 0

    def work(i):
        try:
            encoded = isinstance(images[i], bytes) and names is not None
            out[i] = decode_file(images[i], size, f"{label} item {names[i]}" if encoded else None)
        except DataError as e:
            if not skip_bad:
                raise
            bad.append((i, str(e)))

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(work, i) for i in range(len(images))]
        for future in concurrent.futures.as_completed(futures):
            if future.exception() is not None:
                # Fail now: do not decode the rest of the dataset before reporting the bad file.
                pool.shutdown(wait=False, cancel_futures=True)
                raise future.exception()
            done += 1
            if done % 1000 == 0 or done == len(images):
                rate = done / max(time.monotonic() - start, 1e-9)
                print(f"  {label} decoded {done}/{len(images)} images ({rate:.0f}/s, "
                      f"ETA {(len(images) - done) / rate:.0f} s)", file=sys.stderr, flush=True)
    if bad:
        print(f"  {label}: skipped {len(bad)} unreadable image(s):", file=sys.stderr)
        for _, message in sorted(bad):
            print(f"    {message}", file=sys.stderr)
    keep = np.setdiff1d(np.arange(len(images)), [i for i, _ in bad])
    return out[keep], keep
