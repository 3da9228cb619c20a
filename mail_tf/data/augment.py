"""The paper's augmentation (Sec. 4) and optional random augmentation, on float image batches.

Paper: every training image gets three extra copies, rotated 20 degrees, translated (5, 5) pixels,
and blurred with a 3x3 Gaussian (sigma 0.8, OpenCV's default for that size); the 4x set is
shuffled. Transform ids: 0 original, 1 rotation, 2 translation, 3 blur.
"""

import math

import keras
import tensorflow as tf

ROTATION_DEGREES = 20.0
TRANSLATION_PX = 5.0
BLUR_SIGMA = 0.8
N_TRANSFORMS = 4


def _affine(images, transforms):
    """Apply per-image projective transforms (B, 8) mapping output to input coordinates."""
    return keras.ops.image.affine_transform(images, tf.cast(transforms, tf.float32), interpolation="bilinear",
                                            fill_mode="reflect", fill_value=0.0)


def _rotation_transforms(angles, height, width):
    cx, cy = (tf.cast(width, tf.float32) - 1) / 2, (tf.cast(height, tf.float32) - 1) / 2
    c, s = tf.cos(angles), tf.sin(angles)
    zeros = tf.zeros_like(angles)
    return tf.stack([c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy, zeros, zeros], axis=1)


def _translation_transforms(dx, dy):
    ones, zeros = tf.ones_like(dx), tf.zeros_like(dx)
    return tf.stack([ones, zeros, -dx, zeros, ones, -dy, zeros, zeros], axis=1)


def rotate(images, degrees):
    b, h, w = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    angles = tf.broadcast_to(tf.cast(degrees, tf.float32) * math.pi / 180, (b,))
    return _affine(images, _rotation_transforms(angles, h, w))


def translate(images, dx, dy):
    b = tf.shape(images)[0]
    return _affine(images, _translation_transforms(tf.broadcast_to(tf.cast(dx, tf.float32), (b,)),
                                                   tf.broadcast_to(tf.cast(dy, tf.float32), (b,))))


def gaussian_blur3(images, sigma=BLUR_SIGMA):
    k = tf.exp(-tf.square(tf.range(-1.0, 2.0)) / (2 * sigma * sigma))
    k = k / tf.reduce_sum(k)
    kernel = tf.tile((k[:, None] * k[None, :])[:, :, None, None], [1, 1, tf.shape(images)[-1], 1])
    # Reflect-pad by one pixel with slices: tf.pad(REFLECT) rejects an empty batch.
    padded = tf.concat([images[:, 1:2], images, images[:, -2:-1]], axis=1)
    padded = tf.concat([padded[:, :, 1:2], padded, padded[:, :, -2:-1]], axis=2)
    blurred = tf.nn.depthwise_conv2d(padded, kernel, strides=[1, 1, 1, 1], padding="VALID")
    return tf.reshape(blurred, tf.shape(images))   # an empty batch comes back with the padded shape


def paper_transform(images, transform_ids):
    """Apply transform id t (0 original, 1 rotation, 2 translation, 3 blur) to each image of a batch."""
    # Partition by id so each image is transformed once (not all four variants of every image).
    ids = tf.cast(transform_ids, tf.int32)
    parts = tf.dynamic_partition(images, ids, N_TRANSFORMS)
    positions = tf.dynamic_partition(tf.range(tf.shape(images)[0]), ids, N_TRANSFORMS)
    done = [parts[0], rotate(parts[1], ROTATION_DEGREES),
            translate(parts[2], TRANSLATION_PX, TRANSLATION_PX), gaussian_blur3(parts[3])]
    return tf.dynamic_stitch(positions, done)


def random_transform(images, seed):
    """On-the-fly augmentation: rotation in +-20 degrees and translation in +-5 px per image."""
    b, h, w = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    u = tf.random.stateless_uniform((3, b), seed=seed, minval=-1.0, maxval=1.0)
    rot = _rotation_transforms(u[0] * ROTATION_DEGREES * math.pi / 180, h, w)
    shift = _translation_transforms(u[1] * TRANSLATION_PX, u[2] * TRANSLATION_PX)
    # Compose: translate after rotating (output -> shifted -> rotated input coordinates).
    a = tf.reshape(tf.concat([rot, tf.ones_like(rot[:, :1])], 1), (-1, 3, 3))
    t = tf.reshape(tf.concat([shift, tf.ones_like(shift[:, :1])], 1), (-1, 3, 3))
    combined = tf.reshape(tf.matmul(a, t), (-1, 9))[:, :8]
    return _affine(images, combined)
