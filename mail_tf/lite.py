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
the file stores no zero blocks and one op per conv. Numerics equal the Keras model's to float round-off
(tests/test_lite.py). Internal tensor names are stripped from the file (`strip_names`).
"""

import contextlib
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from mail_tf.layers.conv import GroupedPointwiseConv2D
from mail_tf.layers.dropout import MCDropout
from mail_tf.layers.noise import AttentionNoise, noise_layers
from mail_tf.layers.random_projection import random_projection_layers
from mail_tf.layers.walk import layer_switches, sublayers

QUANTIZATIONS = ("none", "float16", "dynamic", "int8", "int8_per_tensor")
FULL_INTEGER = ("int8", "int8_per_tensor")     # the kinds calibrated on a representative dataset


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
        yield


def input_names(model):
    return [x.name for x in model.inputs]


def convert(model, quantize="none", representative=None):
    """The .tflite bytes of `model`'s deterministic inference.

    quantize: "none" (float32), "float16" (float16 weights), "dynamic" (int8 weights, float
    activations), "int8" (full-integer, weights quantised per output channel; `representative` is
    required: a list of input batches, each a list of float32 arrays in [0, 1], one per modality, drawn
    from training data) or "int8_per_tensor" (the same with one scale per weight tensor: 1.6 MB smaller
    for MAIL-RN18, whose 63 k output channels each carry a float32 scale and an int64 zero point twice,
    for its kernel and its bias; README "Deploying on a device" measures what it costs).
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
    return strip_names(converter.convert())


def strip_names(content):
    """`.tflite` bytes without the converter's internal tensor names (debug strings: a tenth of a MAIL
    int8 file before its grouped convs became single ops). The inputs' and outputs' names stay (a
    LiteModel finds its inputs by name), and so do the signatures.

    TensorFlow ships the .tflite schema's Python classes only in a private module: this is the one
    place mail-tf reads it. Buffers are written 16-byte aligned, as the converter writes them."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    for graph in model.subgraphs:
        keep = set(graph.inputs) | set(graph.outputs)
        for i, tensor in enumerate(graph.tensors):
            if i not in keep:
                tensor.name = None
    builder = flatbuffers.Builder(len(content) + 1024)
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


def export_tflite(model, path, class_names, image_size, quantize="none", representative=None):
    """Write `path` (.tflite) and its metadata `path` with suffix .json (tasks, class names, inputs,
    quantisation, what the deterministic export fixed). Returns the metadata."""
    content = convert(model, quantize, representative)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    meta = {"format": "tflite", "quantize": quantize, "tasks": list(model.output),
            "class_names": {t: list(class_names[t]) for t in model.output}, "inputs": input_names(model),
            "image_size": image_size, "input": "float32 in [0, 1], one batch per modality, at image_size",
            "output": "float32 logits per task", "fixed": stochastic_parts(model), "bytes": len(content)}
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
