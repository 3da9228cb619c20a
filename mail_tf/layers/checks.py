"""Argument and input-shape checks the layers share: a wrong value is one clear line naming the
layer, the argument and what was expected."""


def check_rank4(layer, shape):
    """The channel count of a (batch, height, width, channels) `shape`, or a ValueError naming `layer`."""
    if len(shape) != 4 or shape[-1] is None:
        raise ValueError(f"{layer.name}: expected a (batch, height, width, channels) input with known "
                         f"channels, got shape {tuple(shape)}")
    return int(shape[-1])


def check_groups(layer, shape, groups):
    """The input channels per group of a grouped conv's input `shape`, or a ValueError naming `layer`."""
    channels = shape[-1]
    if channels is None or channels % groups:
        raise ValueError(f"{layer.name}: input channels ({channels}) must be divisible by groups={groups}; "
                         f"input shape {tuple(shape)}")
    return channels // groups


def check_positive(layer, what, value):
    if not value > 0:
        raise ValueError(f"{layer.name}: {what} must be positive, got {value!r}")


def check_non_negative(layer, what, value):
    if not value >= 0:
        raise ValueError(f"{layer.name}: {what} must be >= 0, got {value!r}")
