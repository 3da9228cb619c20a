"""Inference on a snapshot of a model's weights, held as graph constants (`freeze`).

A `tf.function` that reads the weights from variables redoes, at every call, all the work that
depends only on them: the batch-norm fold into the convs (`conv_bn`), the grouped convs' compact and
block-diagonal kernels, the shuffle's row permutation, RPF standardisation, and oneDNN's re-layout
of every conv filter into its blocked format. With the weights as constants in the graph, the
graph optimiser folds that work away once when the function is first run, and oneDNN keeps its
re-laid-out filters. Predict step, batch 32 (docs/PERFORMANCE.md): MAIL-RN18 1.33x at 32 px, 1.12x
at 64 px, 1.10x at 128 px; the plain ResNet-18 pair 1.38x at 32 px.

The snapshot is the weights when `freeze` is called: freeze again after they change (training,
`load_weights`). What a model changes at inference stays a variable, read at every call: integer
state (seed generators: Robust-MAIL's attention noise draws anew each call) and the random kernels
of RPF layers (`redraw_random_filters` on the model still takes effect).
"""

import keras
import tensorflow as tf

from mail_tf.layers.random_projection import random_projection_layers


class FrozenModel:
    """`model` at inference with its weights as constants; called like the model.

    frozen = freeze(model); logits = frozen(images) — also inside a `tf.function` (where the
    constants enter the graph) and under a `GradientTape` watching the images (attacks).
    """

    def __init__(self, model):
        self.model = model
        redrawn = {id(layer.random_kernel) for layer in random_projection_layers(model)}
        live = lambda v: id(v) in redrawn or not keras.backend.is_float_dtype(v.dtype)
        # (variable, its value now, or None where the variable is read at every call)
        self._trainable = [(v, None if live(v) else v.numpy()) for v in model.trainable_variables]
        self._state = [(v, None if live(v) else v.numpy()) for v in model.non_trainable_variables]
        self._advancing = [i for i, v in enumerate(model.non_trainable_variables)
                           if not keras.backend.is_float_dtype(v.dtype)]
        self._eager = None

    def _values(self):
        """The weights for one call: fresh constants in a graph being traced (so the graph holds
        them), the same eager tensors otherwise; live variables read now."""
        if tf.inside_function():
            const = lambda v, a: v.value if a is None else tf.constant(a)
            return ([const(v, a) for v, a in self._trainable], [const(v, a) for v, a in self._state])
        if self._eager is None:
            self._eager = ([None if a is None else tf.constant(a) for _, a in self._trainable],
                           [None if a is None else tf.constant(a) for _, a in self._state])
        pick = lambda pairs, cached: [v.value if a is None else c for (v, a), c in zip(pairs, cached)]
        return pick(self._trainable, self._eager[0]), pick(self._state, self._eager[1])

    def __call__(self, inputs, training=False):
        if training:
            raise ValueError("a frozen model runs at inference only (training=False); train the model itself")
        trainable, state = self._values()
        outputs, new_state = self.model.stateless_call(trainable, state, inputs, training=False)
        for i in self._advancing:                        # seed generators: the next call draws anew
            self._state[i][0].assign(new_state[i])
        return outputs


def freeze(model):
    """A `FrozenModel` of `model`'s current weights (see the module docstring)."""
    return FrozenModel(model)
