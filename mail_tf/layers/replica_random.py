"""Per-example random draws that do not depend on how a batch is split over replicas.

Keras layers draw their randomness from a `SeedGenerator` whose state is the same on every replica
of a `tf.distribute` strategy. A layer that draws a (local batch, ...) tensor would therefore give
example i of every replica the same dropout mask (or noise), and N workers would not reproduce
the masks one device draws for the same global batch. `global_batch_draw` draws the tensor of the
whole global batch instead, with the same seed on every replica, and keeps this replica's rows:
every example gets the value it gets on one device. With one replica it is the plain draw.
"""

import tensorflow as tf


def split_over_replicas():
    """The replica context when a traced step runs on several replicas, else None (one device, or
    cross-replica code): the only case in which a draw must be taken for the global batch."""
    ctx = tf.distribute.get_replica_context()
    return ctx if ctx is not None and ctx.num_replicas_in_sync > 1 else None


def global_batch_draw(draw, shape):
    """draw(shape) -> random tensor with the batch on axis 0, as this replica's rows of the draw
    for the global batch. shape: the local shape (a tensor or list; axis 0 the local batch)."""
    ctx = split_over_replicas()
    if ctx is None:
        return draw(shape)
    shape = tf.convert_to_tensor(shape, tf.int32)
    local = shape[:1]
    sizes = ctx.all_gather(local, axis=0)                        # every replica's batch, in replica order
    offset = tf.reduce_sum(sizes[:ctx.replica_id_in_sync_group])
    full = draw(tf.concat([tf.reduce_sum(sizes, keepdims=True), shape[1:]], 0))
    return full[offset:offset + local[0]]
