"""The TMTL loss (Eq. 14): sum over tasks of lambda_t * cross-entropy_t, on logits."""

import tensorflow as tf


def tmtl_loss(labels, logits, weights=None, global_batch_size=None):
    """sum_t weights[t] * mean sparse CE(labels[t], logits[t]).

    labels, logits: dicts keyed by task name; labels are integer class ids.
    weights: {task: lambda_t}; default 1/T per task (the notebooks' 0.5 / 0.5 for two tasks).
    global_batch_size: under a distribution strategy, the batch size summed over replicas; each
    replica then returns its share (sum / global size) and the shares add up to the mean.
    """
    tasks = list(logits)
    if weights is None:
        weights = {t: 1.0 / len(tasks) for t in tasks}
    total = 0.0
    for t in tasks:
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(labels[t], tf.int32), logits=tf.cast(logits[t], tf.float32))
        if global_batch_size is None:
            ce = tf.reduce_mean(ce)
        else:
            ce = tf.reduce_sum(ce) / tf.cast(global_batch_size, tf.float32)
        total += weights[t] * ce
    return total
