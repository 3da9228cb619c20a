"""On-device export through LiteRT (TFLite): float32, float16, dynamic-range and full-integer int8.

A converted model takes one float32 batch per modality, named `<task>_image`, in [0, 1] at the
model's input size (normalisation is inside, as in Keras), and returns `{task: logits}` in float32,
whatever the quantisation: `int8` (and `int8_per_tensor`) is full-integer inside, with a quantise
op on each input and a dequantise op on each output. Converted models use builtin ops only (no Flex / SELECT_TF_OPS);
`flex_ops` lists any that slipped in.

The export is of the model's *deterministic* inference: for Robust-MAIL the random projection
filters of the current draw are frozen into the file and the attention noise is off (so it is one
fixed member of the randomised model, not the randomised model), and Monte-Carlo dropout is off.
Grouped 1x1 convolutions are traced as one grouped CONV_2D each (`GroupedPointwiseConv2D.as_conv`), so
the file stores no zero blocks and one op per conv; 1x1 `Conv2D`s are CONV_2D too, not matmuls
(`as_conv`). Numerics equal the Keras model's to float round-off (tests/test_lite.py). Internal tensor
names are stripped from the file (`strip_names`).
"""

import contextlib
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from mail_tf.layers.conv import Conv2D, GroupedPointwiseConv2D
from mail_tf.layers.dropout import MCDropout
from mail_tf.layers.noise import AttentionNoise, noise_layers
from mail_tf.layers.random_projection import random_projection_layers
from mail_tf.layers.walk import layer_switches, sublayers

QUANTIZATIONS = ("none", "float16", "dynamic", "int8", "int8_per_tensor")
FULL_INTEGER = ("int8", "int8_per_tensor")     # the kinds calibrated on a representative dataset
# int8: a kernel takes one weight scale when its channels' mean relative RMS error under it is at most
# this (MAIL-RN18 of make train: 257 of 274 kernels, 1.4 MB smaller, test accuracy unchanged).
PER_TENSOR_TOLERANCE = 0.02


def stochastic_parts(model):
    """What a deterministic export fixes or switches off in `model`, in words ([] for none)."""
    parts = []
    if random_projection_layers(model):
        parts.append("random projection filters frozen at their current draw")
    if noise_layers(model):
        parts.append("attention noise off")
    if any(isinstance(layer, MCDropout) for layer in sublayers(model)):
        parts.append("Monte-Carlo dropout off")
    return parts


@contextlib.contextmanager
def deterministic_inference(model):
    """Trace `model` inside this block for its deterministic, compact inference graph."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(layer_switches(model, AttentionNoise, active=False))
        stack.enter_context(layer_switches(model, MCDropout, active=False))
        stack.enter_context(layer_switches(model, GroupedPointwiseConv2D, as_conv=True))
        stack.enter_context(layer_switches(model, Conv2D, as_conv=True))
        yield


def input_names(model):
    return [x.name for x in model.inputs]


def convert(model, quantize="none", representative=None, per_tensor_tolerance=PER_TENSOR_TOLERANCE):
    """The .tflite bytes of `model`'s deterministic inference.

    quantize: "none" (float32), "float16" (float16 weights), "dynamic" (int8 weights, float
    activations), "int8" (full-integer; `representative` is required: a list of input batches, each a
    list of float32 arrays in [0, 1], one per modality, drawn from training data; weights quantised per
    output channel where their channels differ in range, else with one scale per kernel:
    `per_tensor_where_close` with `per_tensor_tolerance`, 0 keeps every per-channel scale) or
    "int8_per_tensor" (the converter's one scale per weight tensor everywhere: smallest, and it costs
    accuracy; README "Deploying on a device" measures both).
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if quantize in FULL_INTEGER and not representative:
        raise ValueError("int8 quantisation needs a representative dataset (a few hundred training pairs)")
    specs = [tf.TensorSpec((None,) + tuple(x.shape[1:]), tf.float32, name=name)
             for x, name in zip(model.inputs, input_names(model))]
    tasks = list(model.output)

    def logits(*images):     # a tuple in task order: the file's outputs in that order
        out = model(list(images), training=False)
        return tuple(tf.cast(out[t], tf.float32) for t in tasks)

    with deterministic_inference(model):
        function = tf.function(logits, input_signature=specs).get_concrete_function()
    # From the concrete function alone, the converter freezes the variables into constants (with the
    # model as its trackable object it keeps them as resource variables it then cannot read).
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize in FULL_INTEGER:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # The converter's only switch for per-tensor weights is this private attribute (no public one).
        converter._experimental_disable_per_channel = quantize == "int8_per_tensor"
        batches = [[np.asarray(x, np.float32) for x in batch] for batch in representative]

        def samples():
            for batch in batches:
                for i in range(len(batch[0])):
                    yield [x[i:i + 1] for x in batch]

        converter.representative_dataset = samples
    content = strip_names(converter.convert())
    if quantize == "int8":
        content = per_tensor_where_close(content, per_tensor_tolerance)[0]
    return content


def strip_names(content):
    """`.tflite` bytes without the converter's internal tensor names (debug strings: a tenth of a MAIL
    int8 file before its grouped convs became single ops). The inputs' and outputs' names stay (a
    LiteModel finds its inputs by name), and so do the signatures."""
    model, _ = _read(content)
    for graph in model.subgraphs:
        keep = set(graph.inputs) | set(graph.outputs)
        for i, tensor in enumerate(graph.tensors):
            if i not in keep:
                tensor.name = None
    return _write(model, len(content))


# Ops whose input 1 is a kernel quantised per output channel and input 2 its int32 bias (scale:
# the input's scale times the kernel channel's).
_WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def per_tensor_where_close(content, tolerance=PER_TENSOR_TOLERANCE):
    """Full-integer `.tflite` bytes with one weight scale per kernel wherever that loses little, and
    the per-channel scales kept elsewhere; returns (bytes, {"per_tensor": n, "per_channel": n}).

    Each per-channel kernel costs a float32 scale and an int64 zero point per output channel, twice
    (kernel and bias): 1.5 MB of MAIL-RN18's int8 file. A kernel moves to one scale (its largest
    channel scale; its int8 values and its biases requantised, so the largest channel is unchanged)
    when the channels' mean relative RMS error under that scale is at most `tolerance`. Kernels whose
    channels differ widely in range (after batch-norm folding some 1x1 convs span 7x) keep theirs:
    the converter's all-per-tensor file (`int8_per_tensor`) is what loses accuracy on them. The int8
    values of a moved kernel are rounded twice (once by the converter per channel), so their error is
    at most one step of the new scale, and none for the largest channel."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    model, schema = _read(content)
    counts = {"per_tensor": 0, "per_channel": 0}
    for graph in model.subgraphs:
        users = {}                      # kernel tensor -> the ops that read it
        for op in graph.operators:
            for pos, t in enumerate(op.inputs):
                users.setdefault(t, []).append((op, pos))
        for kernel, ops in users.items():
            tensor = graph.tensors[kernel] if kernel >= 0 else None
            if tensor is None or tensor.type != schema.TensorType.INT8 or not _per_channel(tensor):
                continue
            if not all(pos == 1 and _op_name(model, op, schema) in _WEIGHTED_OPS for op, pos in ops):
                continue
            q = tensor.quantization
            data = _buffer(model, tensor, np.int8)
            axis = q.quantizedDimension
            shape = [1] * data.ndim
            shape[axis] = -1
            scales = np.asarray(q.scale, np.float64)
            w = data * scales.reshape(shape)
            scale = scales.max()
            requantised = np.clip(np.round(w / scale), -127, 127)
            other = tuple(i for i in range(w.ndim) if i != axis)
            error = np.sqrt(((w - requantised * scale) ** 2).mean(other))
            rms = np.sqrt((w ** 2).mean(other))
            relative = np.where(rms > 0, error / np.maximum(rms, 1e-30), 0.0)
            if relative.mean() > tolerance or (tolerance == 0 and relative.mean() > 0):
                counts["per_channel"] += 1
                continue
            counts["per_tensor"] += 1
            _set_buffer(model, tensor, requantised.astype(np.int8))
            tensor.quantization = _one_scale(schema, scale)
            for op, _ in ops:
                if len(op.inputs) < 3 or op.inputs[2] < 0:
                    continue
                bias = graph.tensors[op.inputs[2]]
                input_scale = graph.tensors[op.inputs[0]].quantization.scale[0]
                values = _buffer(model, bias, np.int32).astype(np.float64)
                real = values * np.asarray(bias.quantization.scale, np.float64)
                bias_scale = float(input_scale) * scale
                _set_buffer(model, bias, np.round(real / bias_scale).astype(np.int32))
                bias.quantization = _one_scale(schema, bias_scale)
    return _write(model, len(content)), counts


def _per_channel(tensor):
    q = tensor.quantization
    return q is not None and q.scale is not None and len(q.scale) > 1


def _op_name(model, op, schema):
    code = model.operatorCodes[op.opcodeIndex]
    number = max(code.builtinCode, code.deprecatedBuiltinCode)
    return next(k for k, v in vars(schema.BuiltinOperator).items() if v == number)


def _buffer(model, tensor, dtype):
    data = np.asarray(model.buffers[tensor.buffer].data, np.uint8).tobytes()
    return np.frombuffer(data, dtype).reshape(tensor.shape)


def _set_buffer(model, tensor, values):
    """Store `values` as `tensor`'s data: in its buffer if no other tensor reads it, else in a new
    one (the converter shares identical buffers between tensors, e.g. zero biases)."""
    data = np.frombuffer(values.tobytes(), np.uint8)
    readers = sum(t.buffer == tensor.buffer for g in model.subgraphs for t in g.tensors)
    if readers == 1 and not any(m.buffer == tensor.buffer for m in model.metadata or []):
        model.buffers[tensor.buffer].data = data
        return
    buffer = type(model.buffers[tensor.buffer])()
    buffer.data = data
    model.buffers.append(buffer)
    tensor.buffer = len(model.buffers) - 1


def _one_scale(schema, scale):
    q = schema.QuantizationParametersT()
    q.scale, q.zeroPoint, q.quantizedDimension = [float(scale)], [0], 0
    return q


def _read(content):
    """The .tflite schema's object tree of `content`. TensorFlow ships the schema's Python classes only
    in a private module: `_read` and `_write` are the one place mail-tf reads it."""
    from tensorflow.lite.python import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(bytearray(content), 0), schema


def _write(model, size_hint):
    """The bytes of a schema object tree, buffers 16-byte aligned as the converter writes them."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    builder = flatbuffers.Builder(size_hint + 1024)
    model.buffers = [_PackedBuffer(builder, b, schema) for b in model.buffers]
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class _PackedBuffer:
    """A .tflite buffer table written into `builder` at once, its data 16-byte aligned (the schema's
    force_align, which the generated Python code does not apply); `Pack` returns it for ModelT.Pack."""

    def __init__(self, builder, buffer, schema):
        data = None
        if buffer.data is not None and len(buffer.data):
            payload = np.asarray(buffer.data, np.uint8).tobytes()
            builder.StartVector(1, len(payload), 16)
            builder.head -= len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        schema.BufferAddOffset(builder, buffer.offset)
        schema.BufferAddSize(builder, buffer.size)
        self.table = schema.BufferEnd(builder)

    def Pack(self, builder):   # noqa: N802 (the generated code's spelling)
        return self.table


def interpreter(content, num_threads=None, delegates=True):
    """A LiteRT interpreter for `.tflite` bytes: `ai_edge_litert` (the maintained runtime) where it is
    installed, else TensorFlow's own `tf.lite.Interpreter`. `delegates=False`: builtin kernels only
    (no XNNPACK), so every op stays visible."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        Interpreter, OpResolverType = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    kwargs = {} if delegates else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    return Interpreter(model_content=content, num_threads=num_threads, **kwargs)


def op_names(content):
    """The operators in a .tflite model. The interpreters list them only through a private method:
    this is the one place mail-tf calls it."""
    found = interpreter(content, delegates=False)
    found.allocate_tensors()
    return sorted({op["op_name"] for op in found._get_ops_details()})


def flex_ops(content):
    """Operators outside LiteRT's builtins (Flex / select-TF or custom ops) in a .tflite model."""
    return [op for op in op_names(content) if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE_FLEX")]


def export_tflite(model, path, class_names, image_size, quantize="none", representative=None,
                  per_tensor_tolerance=PER_TENSOR_TOLERANCE):
    """Write `path` (.tflite) and its metadata `path` with suffix .json (tasks, class names, inputs,
    quantisation, what the deterministic export fixed). Returns the metadata."""
    content = convert(model, quantize, representative, per_tensor_tolerance)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    meta = {"format": "tflite", "quantize": quantize, "tasks": list(model.output),
            "class_names": {t: list(class_names[t]) for t in model.output}, "inputs": input_names(model),
            "image_size": image_size, "input": "float32 in [0, 1], one batch per modality, at image_size",
            "output": "float32 logits per task", "fixed": stochastic_parts(model), "bytes": len(content)}
    if quantize == "int8":
        meta["per_tensor_tolerance"] = per_tensor_tolerance
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def softmax(logits):
    """Probabilities from (N, K) logits (numpy): the explicit step after a LiteModel call."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class LiteModel:
    """Runs a .tflite file from `convert`: `LiteModel(path)(images) -> {task: logits}` (numpy).

    images: one float32 batch per modality in [0, 1], in the order of `input_names` (the model's, from
    the metadata beside the file that `export_tflite` writes). Task names come from that metadata too;
    without it, inputs follow the file and outputs are `output_0`, ...
    """

    def __init__(self, path_or_content, num_threads=None):
        content, meta = path_or_content, {}
        if not isinstance(content, (bytes, bytearray)):
            path = Path(path_or_content)
            content = path.read_bytes()
            if path.with_suffix(".json").exists():
                meta = json.loads(path.with_suffix(".json").read_text())
        self.size, self.meta, self.num_threads = len(content), meta, num_threads
        self._content = content
        self.delegate = "XNNPACK"
        self.interpreter = interpreter(content, num_threads)
        self.interpreter.allocate_tensors()
        details = {d["name"]: d for d in self.interpreter.get_input_details()}
        # The converter may order the file's inputs differently from the model: follow the model's.
        self.input_names = [n for n in meta.get("inputs", []) if n in details] or list(details)
        self.inputs = [details[n] for n in self.input_names]
        self.outputs = self.interpreter.get_output_details()
        self.tasks = meta.get("tasks") or [f"output_{i}" for i in range(len(self.outputs))]
        self._batch = None

    def __call__(self, images):
        if len(images) != len(self.inputs):
            raise ValueError(f"expected {len(self.inputs)} image batches ({', '.join(self.input_names)}), "
                             f"got {len(images)}")
        images = [np.asarray(x, np.float32) for x in images]
        for d, x in zip(self.inputs, images):
            if x.ndim != 4 or x.shape[1:] != tuple(d["shape_signature"][1:]) or len(x) != len(images[0]):
                raise ValueError(f"{d['name']}: expected ({len(images[0])}, "
                                 f"{', '.join(map(str, d['shape_signature'][1:]))}) float32 images in [0, 1], "
                                 f"got shape {x.shape}")
        if len(images[0]) != self._batch:
            for d in self.inputs:
                self.interpreter.resize_tensor_input(d["index"], (len(images[0]),) + tuple(d["shape_signature"][1:]))
            self.interpreter.allocate_tensors()
            self._batch = len(images[0])
        for d, x in zip(self.inputs, images):
            self.interpreter.set_tensor(d["index"], x)
        try:
            self.interpreter.invoke()
        except RuntimeError as e:
            # XNNPACK declines some int8 graphs (seen: Robust-MAIL's) when it first prepares them; the
            # builtin kernels run them, slower. Said in `delegate`, so a report can state it.
            if "XNNPACK" not in str(e) or self.delegate != "XNNPACK":
                raise
            self.interpreter = interpreter(self._content, self.num_threads, delegates=False)
            self.delegate, self._batch = "none (XNNPACK could not prepare this model)", None
            return self(images)
        return {t: self.interpreter.get_tensor(d["index"]).astype(np.float32) for t, d in zip(self.tasks, self.outputs)}
