"""Compiled train and predict steps, written once for any `tf.distribute` strategy.

Each replica computes its share of the TMTL loss (sum over its examples / global batch size), so
the optimiser's cross-replica gradient sum equals the single-device gradient of the batch mean.
"""

import tensorflow as tf

from mail_tf.attacks.gradient import sign_attack, tmtl_objective
from mail_tf.inference import freeze as freeze_model
from mail_tf.layers.random_projection import random_projection_layers, redraw_random_filters
from mail_tf.training.decay import apply_decoupled_decay, self_decayed
from mail_tf.training.losses import tmtl_loss

SUM = tf.distribute.ReduceOp.SUM


def make_train_step(model, optimizer, loss_weights=None, jit_compile=False, strategy=None, penalty=None,
                    adversarial=None, clean_weight=0.0, seed=0, average=None):
    """A `tf.function` (images, labels) -> loss that takes one optimiser step on the TMTL loss.

    images/labels are a batch as the data pipeline yields it, or its distributed version under
    `strategy`. penalty: optional callable () -> scalar added to the loss (e.g. L2 on kernels);
    the model's own `losses` are always added, and the decoupled decay its layers ask for
    (Robust-MAIL's rho on the trainable RPF kernels, MAN's delta; `mail_tf.training.decay`) is
    applied after every optimiser step.

    adversarial: a `SignAttack` for adversarial training (Algorithm 2): each batch is replaced by
    X* crafted against the model in inference mode, and the update is on
    (1 - clean_weight) * L(X*) + clean_weight * L(X). A model with random projection filters gets
    a new draw before crafting ([A]) and another before the update ([I]); without an attack, one
    new draw per batch. The random start is seeded by (seed, optimiser step), so a resumed run
    repeats it exactly, and N replicas draw the starts one device would.

    average: a `WeightAverage` updated after every optimiser step.
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    randomized = bool(random_projection_layers(model))
    decays = self_decayed(model)

    def replica_craft(images, labels):
        # the same seed on every replica: each takes its rows of the global batch's random start
        step_seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(optimizer.iterations, tf.int64) * 64])
        objective = tmtl_objective(model, labels, loss_weights)
        return tuple(sign_attack(objective, list(images), adversarial, seed=tf.cast(step_seed, tf.int32)))

    def replica_step(images, labels, clean_images):
        local = tf.shape(next(iter(labels.values())))[0]
        global_size = tf.distribute.get_replica_context().all_reduce(SUM, local)
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tmtl_loss(labels, logits, loss_weights, global_batch_size=global_size)
            if clean_weight:
                clean = tmtl_loss(labels, model(clean_images, training=True), loss_weights,
                                  global_batch_size=global_size)
                loss = (1.0 - clean_weight) * loss + clean_weight * clean
            extra = list(model.losses) + ([penalty()] if penalty is not None else [])
            if extra:
                loss += tf.add_n(extra) / replicas
            scaled = optimizer.scale_loss(loss)       # loss scaling under mixed precision
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    # XLA cannot compile across MirroredStrategy's replicas; it applies on one device.
    @tf.function(jit_compile=jit_compile and replicas == 1)
    def train_step(images, labels):
        train_images = images
        if randomized:
            redraw_random_filters(model)                  # [A], or the batch's only draw
        if adversarial is not None:
            train_images = strategy.run(replica_craft, args=(images, labels))
            if randomized:
                redraw_random_filters(model)              # [I]
        loss = strategy.reduce(SUM, strategy.run(replica_step, args=(train_images, labels, images)), axis=None)
        apply_decoupled_decay(decays, optimizer.learning_rate)
        if average is not None:
            average.update(optimizer.iterations)
        return loss

    return train_step


def make_predict_fn(model, jit_compile=False, freeze=False):
    """A `tf.function` images -> {task: logits} in inference mode (one device).

    freeze: run on a snapshot of the weights as constants (`mail_tf.inference.freeze`): faster, but
    blind to later changes of the weights, so make a new function after training further.
    """
    forward = freeze_model(model) if freeze else model

    @tf.function(jit_compile=jit_compile)
    def predict(images):
        return forward(images, training=False)

    return predict


def make_distributed_predict_fn(model, strategy=None):
    """A function (distributed images, labels) -> (logits, labels), numpy, gathered over replicas
    in batch order."""
    strategy = strategy or tf.distribute.get_strategy()

    @tf.function
    def step(images, labels):
        return strategy.run(lambda x, y: (model(x, training=False), y), args=(images, labels))

    def predict(images, labels):
        logits, labels = step(images, labels)
        gather = lambda t: strategy.gather(t, axis=0).numpy()     # every replica's, on every worker
        return ({k: gather(v) for k, v in logits.items()}, {k: gather(v) for k, v in labels.items()})

    return predict
