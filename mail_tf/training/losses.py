"""The TMTL loss (Eq. 14): sum over tasks of lambda_t * cross-entropy_t, on logits."""

import tensorflow as tf


def tmtl_loss(labels, logits, weights=None):
    """sum_t weights[t] * mean sparse CE(labels[t], logits[t]).

    labels, logits: dicts keyed by task name; labels are integer class ids.
    weights: {task: lambda_t}; default 1/T per task (the notebooks' 0.5 / 0.5 for two tasks).
    """
    tasks = list(logits)
    if weights is None:
        weights = {t: 1.0 / len(tasks) for t in tasks}
    total = 0.0
    for t in tasks:
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(labels[t], tf.int32), logits=tf.cast(logits[t], tf.float32))
        total += weights[t] * tf.reduce_mean(ce)
    return total
