"""Keras's Adam, AdamW and SGD with each variable's update as one fused TensorFlow kernel.

Keras 3 writes an optimiser's update from ~25 small ops per variable (casts, the bias-correction
powers, the moment updates, the step). MAIL-RN18 has ~800 trainable tensors against a plain
ResNet-18 pair's ~120, so its Adam step was ~21,000 ops, two thirds of all the ops in its train
step, each paying the executor's per-op cost on a CPU (docs/PERFORMANCE.md).
`tf.raw_ops.ResourceApplyAdam` / `ResourceApplyKerasMomentum` compute the same update in one op
per variable, and the bias-correction powers are computed once per step instead of per variable.

Same hyper-parameters, state variables and checkpoints as Keras's classes (they are subclasses);
what the fused kernels do not cover (amsgrad, sparse gradients, non-float32 variables, SGD without
momentum) goes through Keras's own `update_step`. tests/test_fast_paths.py checks the weights after
several steps against Keras's optimisers: SGD to 1e-6, Adam to 1e-4 relative, because the Adam
kernel computes 1 - beta in float32 where Keras computes it in double (for beta_2 = 0.999 the
second moment's update differs by 1.3e-5 relative; both are float32-accurate).
"""

import keras
import tensorflow as tf


def _dense_float32(gradient, variable):
    return not isinstance(gradient, tf.IndexedSlices) and variable.dtype == "float32"


class _FusedAdamStep:
    """Adam's update as one `ResourceApplyAdam` per variable; beta_1^t and beta_2^t once per `apply`."""

    def apply(self, grads, trainable_variables=None):
        self._powers = None
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._powers = None

    def step_powers(self):
        if getattr(self, "_powers", None) is None:
            t = tf.cast(self.iterations + 1, tf.float32)
            self._powers = (tf.pow(tf.constant(self.beta_1, tf.float32), t),
                            tf.pow(tf.constant(self.beta_2, tf.float32), t))
        return self._powers

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or not _dense_float32(gradient, variable):
            return super().update_step(gradient, variable, learning_rate)
        beta_1_power, beta_2_power = self.step_powers()
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle, v=self._velocities[index].handle,
            beta1_power=beta_1_power, beta2_power=beta_2_power, lr=tf.cast(learning_rate, tf.float32),
            beta1=tf.constant(self.beta_1, tf.float32), beta2=tf.constant(self.beta_2, tf.float32),
            epsilon=tf.constant(self.epsilon, tf.float32), grad=tf.cast(gradient, tf.float32))


@keras.saving.register_keras_serializable(package="mail_tf")
class Adam(_FusedAdamStep, keras.optimizers.Adam):
    """`keras.optimizers.Adam`, one fused kernel per variable."""


@keras.saving.register_keras_serializable(package="mail_tf")
class AdamW(_FusedAdamStep, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` (its decoupled weight decay is Keras's), one fused kernel per variable."""


@keras.saving.register_keras_serializable(package="mail_tf")
class SGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD`, one fused kernel per variable when it has momentum."""

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum == 0 or not _dense_float32(gradient, variable):
            return super().update_step(gradient, variable, learning_rate)
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=self.momentums[self._get_variable_index(variable)].handle,
            lr=tf.cast(learning_rate, tf.float32), grad=tf.cast(gradient, tf.float32),
            momentum=tf.constant(self.momentum, tf.float32), use_nesterov=self.nesterov)
