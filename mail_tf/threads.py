"""How TensorFlow shares a CPU between operations, set once per process before its runtime starts.

TensorFlow keeps two CPU thread pools: inter-op threads run independent ops at the same time, and
intra-op threads split one op's work. Its default gives every op all cores. MAIL runs ~8,000 small
kernels per train step, in two modality branches and parallel paths inside each block; on a 2-core
CPU splitting each small kernel across both cores costs more in synchronisation than it gains, and
one thread per op with the cores running independent ops is 1.3-1.8x faster for MAIL-RN18 at
32-64 px (docs/PERFORMANCE.md). "auto" therefore means one intra-op thread on a small CPU-only
machine (at most `SMALL_CPU` cores, the only kind measured), and TensorFlow's choice elsewhere.
"""

import os

import tensorflow as tf

AUTO = -1        # intra_op value: `auto_intra_op()`
SMALL_CPU = 4    # cores up to which "auto" runs each op on one thread


def cpu_cores():
    """The cores this process may run on (its affinity, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def auto_intra_op():
    """1 on a CPU-only machine of at most SMALL_CPU cores, else 0 (TensorFlow's choice)."""
    return 1 if cpu_cores() <= SMALL_CPU and not tf.config.list_physical_devices("GPU") else 0


def configure(inter_op=0, intra_op=AUTO):
    """Set the inter- and intra-op pools (0: TensorFlow's choice; intra_op AUTO: `auto_intra_op()`).

    Call before TensorFlow runs anything. If its runtime has already started, the pools stay as
    they are, and a request for explicit sizes other than those is a ValueError. Returns `pools()`.
    """
    if inter_op < 0 or intra_op < AUTO:
        raise ValueError(f"thread counts are >= 0 (intra_op also {AUTO}: auto), got {inter_op}, {intra_op}")
    intra = auto_intra_op() if intra_op == AUTO else intra_op
    threading = tf.config.threading
    try:
        threading.set_inter_op_parallelism_threads(inter_op)
        threading.set_intra_op_parallelism_threads(intra)
    except RuntimeError:    # the runtime started (e.g. an entry point called inside a test process)
        now = pools()
        # Only explicit sizes (> 0) are a request to refuse; 0 and AUTO accept what is there.
        if any(n > 0 and n != now[k] for n, k in ((inter_op, "inter_op"), (intra_op, "intra_op"))):
            raise ValueError(f"TensorFlow's thread pools are already {now}; set them before it runs "
                             f"anything") from None
    return pools()


def pools():
    """TensorFlow's CPU thread pools as set: {"inter_op": ..., "intra_op": ...} (0: its own choice)."""
    threading = tf.config.threading
    return {"inter_op": threading.get_inter_op_parallelism_threads(),
            "intra_op": threading.get_intra_op_parallelism_threads()}
