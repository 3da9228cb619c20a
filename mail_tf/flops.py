"""FLOP counting for Keras models, grouped convolutions included.

Under Keras 3 the TF profiler reports 0 FLOPs for `Conv2D(groups > 1)` (Keras runs it in an
XLA-compiled sub-function the profiler does not enter), and a profile of the executed graph would
charge mail-tf's fast grouped conv for its block-diagonal matmul. So FLOPs are counted from the
layers themselves: one forward pass records every call of every layer, nested ones included, with
its input and output shapes, and each linear layer is charged by formula:

  2 x multiply-accumulates (the TF profiler's convention), plus one FLOP per output for a bias.

Element-wise work (activations, batch norm, attention products, pooling) is not counted; it is a
small fraction of these networks and the published GFLOPs follow the same convention. A layer that
does linear work outside its sublayers declares it with a `flops(input_shape)` method.
"""

import math

import keras
import numpy as np

from mail_tf.layers.conv import GroupedPointwiseConv2D
from mail_tf.layers.walk import sublayers


def _shape(t):
    return tuple(int(d) for d in t.shape)


# Each rule: (multiply-accumulates, bias adds) of one call; dense=True counts a grouped convolution
# (groups > 1) as the dense one of the same shapes (depth-wise convolutions stay depth-wise).
def _bias(layer, y_shape):
    return math.prod(y_shape) if layer.use_bias else 0


def _conv_flops(layer, x_shape, y_shape, dense=False):
    groups = 1 if dense else getattr(layer, "groups", 1)
    return math.prod(y_shape) * math.prod(layer.kernel_size) * (x_shape[-1] // groups), _bias(layer, y_shape)


def _depthwise_flops(layer, x_shape, y_shape, dense=False):
    return math.prod(y_shape) * math.prod(layer.kernel_size), _bias(layer, y_shape)


def _separable_flops(layer, x_shape, y_shape, dense=False):
    depth = math.prod(y_shape[:-1]) * x_shape[-1] * layer.depth_multiplier
    return depth * math.prod(layer.kernel_size) + depth * y_shape[-1], _bias(layer, y_shape)


def _dense_flops(layer, x_shape, y_shape, dense=False):
    return math.prod(y_shape) * x_shape[-1], _bias(layer, y_shape)


def _grouped_pointwise_flops(layer, x_shape, y_shape, dense=False):
    return math.prod(y_shape) * (x_shape[-1] // (1 if dense else layer.groups)), _bias(layer, y_shape)


# Most specific first: SeparableConv and DepthwiseConv are not Conv subclasses in Keras 3, but order
# keeps that safe if they ever become so.
_RULES = (
    (keras.layers.SeparableConv2D, _separable_flops),
    (keras.layers.DepthwiseConv2D, _depthwise_flops),
    (keras.layers.Conv1D, _conv_flops),
    (keras.layers.Conv2D, _conv_flops),
    (keras.layers.Conv3D, _conv_flops),
    (keras.layers.Dense, _dense_flops),
    (GroupedPointwiseConv2D, _grouped_pointwise_flops),
)


def _rule(layer):
    for cls, rule in _RULES:
        if isinstance(layer, cls):
            return rule
    return None


def _record_calls(model, inputs):
    """Run `model` once on `inputs`, returning [(layer, input, output)] for every layer call.

    A conv's `convolve` counts as a call too: `conv_bn` runs it in place of `call` where it folds a
    batch norm into the conv. `call` runs `convolve` itself, so only the outermost of the two counts."""
    calls = []
    layers = [l for l in sublayers(model, include_self=False)
              if _rule(l) is not None or hasattr(l, "flops")]
    active = set()

    def wrap(layer, method):
        def recorded(*args, **kwargs):
            if id(layer) in active:
                return method(*args, **kwargs)
            active.add(id(layer))
            try:
                out = method(*args, **kwargs)
            finally:
                active.discard(id(layer))
            calls.append((layer, args[0], out))
            return out
        return recorded

    methods = [(l, m) for l in layers for m in ("call", "convolve") if hasattr(l, m)]
    for layer, m in methods:
        setattr(layer, m, wrap(layer, getattr(layer, m)))
    try:
        model(inputs, training=False)
    finally:
        for layer, m in methods:
            delattr(layer, m)  # drop the instance attribute; the class method shows through again
    return calls


def _layer_costs(model):
    """{layer path: [MACs, bias adds, MACs with grouped convs as dense]} of one forward pass."""
    inputs = [np.zeros((1,) + tuple(i.shape[1:]), dtype=i.dtype) for i in model.inputs]
    if len(inputs) == 1:
        inputs = inputs[0]
    table = {}
    for layer, x, y in _record_calls(model, inputs):
        rule = _rule(layer)
        if rule is not None:
            (macs, bias), (dense, _) = rule(layer, _shape(x), _shape(y)), rule(layer, _shape(x), _shape(y), True)
        else:        # a layer's own linear work, declared in FLOPs = 2 x MACs
            macs = dense = layer.flops([_shape(t) for t in x] if isinstance(x, (list, tuple)) else _shape(x)) // 2
            bias = 0
        key = layer.path if hasattr(layer, "path") else layer.name
        row = table.setdefault(key, [0, 0, 0])
        for i, v in enumerate((macs, bias, dense)):
            row[i] += int(v)
    return table


def count_flops(model, per_layer=False):
    """FLOPs of one forward pass of `model` for one sample per input (one image pair for MAIL).

    Returns the total, or with `per_layer=True` a dict {layer path: FLOPs} summed over calls.
    """
    table = {k: 2 * macs + bias for k, (macs, bias, _) in _layer_costs(model).items()}
    return table if per_layer else sum(table.values())


def count_costs(model):
    """One forward pass in the conventions papers use: {"flops": 2 x MACs + bias adds, "macs",
    "flops_grouped_as_dense": FLOPs with every grouped conv counted as the dense one}."""
    rows = _layer_costs(model).values()
    return {"flops": sum(2 * m + b for m, b, _ in rows), "macs": sum(m for m, _, _ in rows),
            "flops_grouped_as_dense": sum(2 * d + b for _, b, d in rows)}
