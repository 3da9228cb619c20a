"""Every layer inside a model, nested ones included.

Keras 3 has no public recursive walk (`Model.layers` lists only the direct children, and MAIL's
blocks hold their own sub-layers), so this is the one place mail-tf reads the private
`Layer._flatten_layers`.
"""


def sublayers(model, include_self=True):
    """`model` (with include_self) and every layer it holds, depth-first, each once."""
    return list(model._flatten_layers(include_self=include_self, recursive=True))
