"""The TMTL loss (Eq. 14): sum over tasks of lambda_t * cross-entropy_t, on logits."""

import tensorflow as tf

from mail_tf.attacks.gradient import per_sample_loss


def tmtl_loss(labels, logits, weights=None, global_batch_size=None):
    """sum_t weights[t] * mean sparse CE(labels[t], logits[t]).

    labels, logits: dicts keyed by task name; labels are integer class ids.
    weights: {task: lambda_t}; default 1/T per task (the notebooks' 0.5 / 0.5 for two tasks).
    global_batch_size: under a distribution strategy, the batch size summed over replicas; each
    replica then returns its share (sum / global size) and the shares add up to the mean.
    """
    per_sample = per_sample_loss(labels, logits, "ce", weights)
    if global_batch_size is None:
        return tf.reduce_mean(per_sample)
    return tf.reduce_sum(per_sample) / tf.cast(global_batch_size, tf.float32)
