"""Where a compiled step spends its time: TensorFlow profiler traces, summed per op type and per layer.

`profile_step` runs a function under `tf.profiler` and reads back the host trace (the XSpace
protobuf TensorFlow writes); every executed kernel is attributed to its op type and to the
innermost Keras layer whose name scope it ran in (gradient kernels to the layer of their forward
op, optimiser kernels to "optimizer"). Times are kernel times summed over both threads of the
pool, so they show where the work goes; the step's wall time is reported beside them, and the gap
between the two is the executor's per-op cost, which the op counts show.
"""

import collections
import glob
import os
import re
import tempfile
import time

import tensorflow as tf

from mail_tf.layers.walk import sublayers

_SUFFIX = re.compile(r"_\d+$")


def layer_classes(model):
    """{layer name: class name} for every layer inside `model` (names repeat across blocks)."""
    return {layer.name: type(layer).__name__ for layer in sublayers(model, include_self=False)}


def _read_host_kernels(path):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith(("tf_Compute", "tf_numa")):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name:           # "scope/op:OpType" (kernels only)
                    yield name, event.duration_ps / 1e9        # ms


def attribute(op_name, classes, optimizer_name):
    """(layer class, backward?) of a kernel named 'scope/.../op'."""
    parts = [_SUFFIX.sub("", p) for p in op_name.split("/")]
    backward = parts[0] == "gradient_tape"
    if backward:
        parts = parts[1:]
    if parts and parts[0] == _SUFFIX.sub("", optimizer_name):
        return "optimizer", False
    for part in reversed(parts[:-1]):
        if part in classes:
            return classes[part], backward
    return "other", backward


def breakdown(path, model, steps, optimizer_name="adam"):
    """Per op type and per layer class: ms per step and kernels per step, from one trace file."""
    classes = layer_classes(model)
    by_type, by_layer = collections.defaultdict(lambda: [0.0, 0]), collections.defaultdict(lambda: [0.0, 0])
    for name, ms in _read_host_kernels(path):
        scope, op_type = name.rsplit(":", 1)
        layer, backward = attribute(scope, classes, optimizer_name)
        for table, key in ((by_type, op_type), (by_layer, layer + (" (backward)" if backward else ""))):
            table[key][0] += ms / steps
            table[key][1] += 1 / steps
    rows = lambda table: [{"name": k, "ms_per_step": round(v[0], 2), "kernels_per_step": round(v[1])}
                          for k, v in sorted(table.items(), key=lambda kv: -kv[1][0])]
    return {"kernel_ms_per_step": round(sum(v[0] for v in by_type.values()), 1),
            "kernels_per_step": round(sum(v[1] for v in by_type.values())),
            "by_op_type": rows(by_type), "by_layer": rows(by_layer)}


def profile_step(fn, args, model, steps=3, warmup=2, optimizer_name="adam", logdir=None):
    """Run `fn(*args)` `warmup` times, then `steps` times under the profiler; the breakdown plus
    the traced steps' wall time."""
    for _ in range(warmup):
        _finish(fn(*args))
    logdir = logdir or tempfile.mkdtemp(prefix="mail_tf_profile_")
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(steps):
        out = fn(*args)
    _finish(out)
    wall = (time.perf_counter() - start) / steps
    tf.profiler.experimental.stop()
    paths = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")), key=os.path.getmtime)
    if not paths:
        raise RuntimeError(f"the profiler wrote no trace under {logdir}")
    return {"wall_ms_per_step": round(wall * 1e3, 1), **breakdown(paths[-1], model, steps, optimizer_name)}


def _finish(out):
    for t in tf.nest.flatten(out):
        if hasattr(t, "numpy"):
            t.numpy()
