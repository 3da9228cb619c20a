"""What the MAIL and DRIFA-Net builders share: argument checks, widths, the inputs and the stem."""

import keras

from mail_tf.layers import BatchNormalization, SameBatch

STAGE_WIDTHS = (64, 128, 256, 512)
MIN_IMAGE_SIZE = 32  # the branches downsample by 32


def scaled_width(width, multiplier):
    """Width times the multiplier, rounded to a multiple of 16 (the GPC and shuffle groups)."""
    return max(16, int(round(width * multiplier / 16)) * 16)


def normalise_tasks(num_classes):
    if isinstance(num_classes, dict):
        tasks = list(num_classes.items())
    else:
        tasks = [(f"task{i + 1}", n) for i, n in enumerate(num_classes)]
    if not tasks:
        raise ValueError("num_classes is empty: give one class count per modality/task")
    for name, n in tasks:
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"task {name!r}: the class count must be an integer >= 2, got {n!r}")
    return tasks


def normalise_shapes(input_shape, m, network="MAIL"):
    shapes = [tuple(input_shape)] * m if not isinstance(input_shape[0], (list, tuple)) else [
        tuple(s) for s in input_shape]
    if len(shapes) != m:
        raise ValueError(f"got {len(shapes)} input shapes for {m} modalities")
    for s in shapes:
        if len(s) != 3 or s[0] is None or s[1] is None or s[2] not in (1, 3):
            raise ValueError(f"input shape must be (height, width, 1 or 3 channels), got {s}")
        if min(s[:2]) < MIN_IMAGE_SIZE:
            raise ValueError(f"image size {s[:2]} is too small: {network} downsamples by 32, so height and "
                             f"width must be at least {MIN_IMAGE_SIZE}")
    return shapes


def modality_inputs(tasks, shapes):
    """(one `<task>_image` input per modality, the tensors the branches start from): with several
    modalities these pass a check that every batch has the same size."""
    inputs = [keras.Input(shape, name=f"{task}_image") for (task, _), shape in zip(tasks, shapes)]
    return inputs, (SameBatch(name="same_batch")(inputs) if len(inputs) > 1 else inputs)


def stem(x, task, filters, attention=None):
    """ResNet's stem for one modality: 7x7 conv, stride 2 -> [attention] -> BN -> ReLU -> 3x3
    max-pool, stride 2 (layers named `<task>_stem_*`)."""
    x = keras.layers.Conv2D(filters, 7, strides=2, padding="same", name=f"{task}_stem_conv")(x)
    if attention is not None:
        x = attention(x)
    x = BatchNormalization(name=f"{task}_stem_bn")(x)
    x = keras.layers.ReLU(name=f"{task}_stem_relu")(x)
    return keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"{task}_stem_pool")(x)
