"""Every layer inside a model, nested ones included.

Keras 3 has no public recursive walk (`Model.layers` lists only the direct children, and MAIL's
blocks hold their own sub-layers), so this is the one place mail-tf reads the private
`Layer._flatten_layers`.
"""

import contextlib


def sublayers(model, include_self=True):
    """`model` (with include_self) and every layer it holds, depth-first, each once."""
    return list(model._flatten_layers(include_self=include_self, recursive=True))


@contextlib.contextmanager
def layer_switches(model, kind, **values):
    """Within this block, every `kind` layer inside `model` has the attributes `values` (restored
    after). For switches a layer reads when a graph is traced: trace inside the block."""
    layers = [layer for layer in sublayers(model) if isinstance(layer, kind)]
    before = [{name: getattr(layer, name) for name in values} for layer in layers]
    for layer in layers:
        for name, value in values.items():
            setattr(layer, name, value)
    try:
        yield layers
    finally:
        for layer, old in zip(layers, before):
            for name, value in old.items():
                setattr(layer, name, value)
