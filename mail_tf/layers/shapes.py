"""Input-shape checks the layers share, so a wrong shape is one clear line naming the layer."""


def check_rank4(layer, shape):
    """The channel count of a (batch, height, width, channels) `shape`, or a ValueError naming `layer`."""
    if len(shape) != 4 or shape[-1] is None:
        raise ValueError(f"{layer.name}: expected a (batch, height, width, channels) input with known "
                         f"channels, got shape {tuple(shape)}")
    return int(shape[-1])
