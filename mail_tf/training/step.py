"""Compiled train and predict steps shared by the training loop and the benchmark."""

import tensorflow as tf

from mail_tf.training.losses import tmtl_loss


def make_train_step(model, optimizer, loss_weights=None, jit_compile=False):
    """A `tf.function` (images, labels) -> loss that takes one optimiser step on the TMTL loss."""

    @tf.function(jit_compile=jit_compile)
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tmtl_loss(labels, logits, loss_weights)
            if model.losses:
                loss += tf.add_n(model.losses)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return train_step


def make_predict_fn(model, jit_compile=False):
    """A `tf.function` images -> {task: logits} in inference mode."""

    @tf.function(jit_compile=jit_compile)
    def predict(images):
        return model(images, training=False)

    return predict
