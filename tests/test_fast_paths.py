"""Every fast formulation equals the plain Keras/TF formulation, forward and gradient."""

import keras
import numpy as np
import pytest
import scipy.fft
import tensorflow as tf

from mail_tf.layers import BatchNormalization, ChannelShuffle, Conv2D, GroupedPointwiseConv2D, channel_dct, dct_matrix
from mail_tf.training import optimizers


def _forward_and_grads(layer, kernel, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.sin(y))  # a non-linear loss, so gradients are not all equal
    gx, gk = tape.gradient(loss, [x, kernel])
    return y.numpy(), gx.numpy(), gk.numpy()


def _assert_same_forward_and_grads(got, want):
    """(y, dL/dx, dL/dkernel) equal to float rounding."""
    for g, w, tol in zip(got, want, (1e-5, 1e-4, 1e-4)):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


# GroupedPointwiseConv2D's paths (mail_tf.layers.conv): one grouped conv where TensorFlow has its
# gradients, else a matmul with the block-diagonal kernel; `as_conv` (LiteRT) always a convolution.
PATHS = ("grouped", "matmul", "as_conv")


def _on_path(monkeypatch, layer, path):
    from mail_tf.layers import conv

    if path == "matmul":        # what a TensorFlow without grouped-conv gradients runs
        monkeypatch.setattr(conv, "grouped_conv_differentiable", lambda dtype: False)
    layer.as_conv = path == "as_conv"


def _ops(layer, shape):
    return tf.function(layer).get_concrete_function(tf.TensorSpec(shape)).graph.get_operations()


def _op_types(layer, shape):
    return {op.type for op in _ops(layer, shape)}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cin,cout,groups,strides,size", [
    (64, 64, 16, 1, 8), (64, 128, 16, 2, 8), (192, 64, 2, 1, 6), (48, 32, 2, 2, 7), (32, 16, 1, 1, 5),
    (64, 32, 4, 1, 1), (96, 32, 2, 1, 9), (100, 40, 5, 1, 2)])   # 1 and 81 pixels: either side of
                                                               # SMALL_MAP_PIXELS; 5 groups: too many
def test_grouped_pointwise_equals_keras_grouped_conv(monkeypatch, path, cin, cout, groups, strides, size):
    from mail_tf.layers import conv

    x = tf.random.stateless_normal((3, size, size, cin), seed=(1, 2))
    ref = keras.layers.Conv2D(cout, 1, strides=strides, groups=groups, bias_initializer="random_normal")
    ref.build(x.shape)
    fast = GroupedPointwiseConv2D(cout, groups=groups, strides=strides)
    fast.build(x.shape)
    assert fast.kernel.shape == ref.kernel.shape  # same layout: weights transfer as they are
    fast.set_weights(ref.get_weights())
    _on_path(monkeypatch, fast, path)
    y0, gx0, gk0 = _forward_and_grads(ref, ref.kernel, x)
    y1, gx1, gk1 = _forward_and_grads(fast, fast.kernel, x)
    assert y1.shape == y0.shape
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx1, gx0, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gk1, gk0, rtol=1e-4, atol=1e-3)
    ops = [op.type for op in _ops(fast, x.shape)]
    # Small maps with few groups: one matmul per group on either path (not for LiteRT).
    per_group = (path != "as_conv" and 1 < groups <= conv.MATMUL_GROUPS and strides == 1
                 and size * size <= conv.SMALL_MAP_PIXELS)
    as_conv = path == "as_conv" or (path == "grouped" and groups > 1 and not per_group)
    assert ("Conv2D" in ops) == as_conv and ("MatMul" in ops) != as_conv
    assert ops.count("MatMul") == (groups if per_group else 0 if as_conv else 1)


def test_grouped_conv_probe_says_whether_tensorflow_has_the_gradients():
    """In this process (oneDNN on, TensorFlow's default on x86) and in one with oneDNN off."""
    import subprocess
    import sys

    from mail_tf.layers.conv import grouped_conv_differentiable

    def has_gradients(dtype):
        x, k = tf.ones((1, 2, 2, 4), dtype), tf.ones((1, 1, 2, 4), dtype)
        try:
            with tf.GradientTape() as tape:
                tape.watch(k)
                y = tf.nn.conv2d(x, k, 1, "VALID")
            tape.gradient(y, k)
            return True
        except tf.errors.OpError:
            return False

    for dtype in ("float32", "float16"):
        assert grouped_conv_differentiable(dtype) == has_gradients(dtype)
    script = ("import tensorflow as tf, numpy as np\n"
              "from mail_tf.layers import GroupedPointwiseConv2D\n"
              "from mail_tf.layers.conv import grouped_conv_differentiable\n"
              "layer = GroupedPointwiseConv2D(8, groups=4)\n"
              "x = tf.ones((2, 3, 3, 8))\n"
              "with tf.GradientTape() as tape:\n"
              "    loss = tf.reduce_sum(layer(x) ** 2)\n"
              "g = tape.gradient(loss, layer.kernel)\n"
              "print(grouped_conv_differentiable('float32'), bool(np.isfinite(g.numpy()).all()))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.stdout.split() == ["False", "True"]     # no grouped gradients there: the matmul path trains


def test_grouped_pointwise_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="divisible by groups=16"):
        GroupedPointwiseConv2D(32, groups=16).build((None, 4, 4, 24))


@pytest.mark.parametrize("n", [8, 64, 128])
def test_dct_matrix_equals_scipy_and_tf_signal(n):
    x = np.random.default_rng(n).normal(size=(4, 3, 5, n)).astype(np.float32)
    expected = scipy.fft.dct(x.astype(np.float64), type=2, norm="ortho", axis=-1)
    ours = channel_dct(tf.constant(x)).numpy()
    tf_dct = tf.signal.dct(tf.constant(x), type=2, norm="ortho").numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    np.testing.assert_allclose(tf_dct, expected, atol=1e-5)
    # Orthonormal: M M^T = I, so the transform preserves energy.
    np.testing.assert_allclose(dct_matrix(n) @ dct_matrix(n).T, np.eye(n), atol=1e-12)


def test_dct_gradient_equals_tf_signal_gradient():
    x = tf.random.stateless_normal((2, 4, 4, 64), seed=(3, 4))
    w = tf.random.stateless_normal((2, 4, 4, 64), seed=(5, 6))
    grads = []
    for fn in (channel_dct, lambda t: tf.signal.dct(t, type=2, norm="ortho")):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.tanh(fn(x)) * w)
        grads.append(tape.gradient(loss, x).numpy())
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-5)


def test_channel_shuffle_is_the_shufflenet_permutation():
    c, g = 48, 16
    x = np.arange(2 * 3 * 3 * c, dtype=np.float32).reshape(2, 3, 3, c)
    y = ChannelShuffle(g)(x).numpy()
    perm = np.arange(c).reshape(g, c // g).T.reshape(-1)
    np.testing.assert_array_equal(y, x[..., perm])


def _bn_pass(layer, x, training):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(y * tf.sin(y))
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return [y.numpy()] + [g.numpy() for g in grads] + [layer.moving_mean.numpy(), layer.moving_variance.numpy()]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 6, 5, 8), (32, 1, 1, 16)])
def test_fused_batch_norm_equals_keras_batch_norm(training, shape):
    x = tf.random.stateless_normal(shape, seed=(3, 4)) * 3.0 + 1.5
    ref = keras.layers.BatchNormalization(momentum=0.9, moving_mean_initializer="random_normal",
                                          moving_variance_initializer="ones", gamma_initializer="random_normal")
    fast = BatchNormalization(momentum=0.9)
    ref.build(shape)
    fast.build(shape)
    fast.set_weights(ref.get_weights())
    assert np.ptp(ref.moving_mean.numpy()) > 0       # the inference path uses non-trivial statistics
    for _ in range(2):        # two steps: the second starts from updated moving statistics
        want, got = _bn_pass(ref, x, training), _bn_pass(fast, x, training)
    for name, w, g in zip(["output", "d/dx", "d/dgamma", "d/dbeta", "moving_mean", "moving_variance"], want, got):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=name)
    if training:
        assert not np.allclose(want[-1], 1.0)          # the moving variance was updated


def test_fused_batch_norm_falls_back_to_keras_where_the_kernel_does_not_apply():
    x = tf.random.stateless_normal((4, 3, 8), seed=(5, 6))        # rank 3: not the fused kernel's
    ref, fast = keras.layers.BatchNormalization(), BatchNormalization()
    ref.build(x.shape)
    fast.build(x.shape)
    np.testing.assert_allclose(fast(x, training=True).numpy(), ref(x, training=True).numpy(), atol=1e-6)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("make,shape,folds", [
    (lambda: Conv2D(16, 1, bias_initializer="random_normal"), (4, 6, 5, 24), True),            # the matmul
    (lambda: Conv2D(16, 1, strides=2, use_bias=False), (4, 6, 5, 24), True),                    # a conv, no bias
    (lambda: GroupedPointwiseConv2D(16, groups=2, bias_initializer="random_normal"), (4, 6, 5, 48), True),
    (lambda: Conv2D(16, 1), (2, 2, 2, 24), False)])   # 8 pixels < 24 weights per output: kept apart
def test_conv_bn_folds_the_inference_batch_norm_into_the_conv(make, shape, folds, training):
    from mail_tf.layers.batch_norm import conv_bn

    x = tf.random.stateless_normal(shape, seed=(9, 10))
    conv = make()
    bn = BatchNormalization(moving_mean_initializer="random_normal", gamma_initializer="random_normal",
                            beta_initializer="random_normal",
                            moving_variance_initializer=keras.initializers.RandomUniform(0.5, 2.0))
    conv.build(x.shape)
    bn.build(conv.compute_output_shape(x.shape))
    if isinstance(conv, GroupedPointwiseConv2D):
        conv.input_shuffle = 4
    want = _forward_and_grads(lambda t: bn(conv(t, training=training), training=training), conv.kernel, x)
    got = _forward_and_grads(lambda t: conv_bn(conv, bn, t, training), conv.kernel, x)
    _assert_same_forward_and_grads(got, want)
    assert np.abs(want[0] - conv(x).numpy()).max() > 0.1      # the batch norm is not the identity
    ops = _op_types(lambda t: conv_bn(conv, bn, t, training), x.shape)
    assert ("FusedBatchNormV3" in ops) == (training or not folds)


def _train(optimizer, steps=4):
    keras.utils.set_random_seed(0)
    w = [keras.Variable(np.random.default_rng(0).standard_normal(s).astype("float32")) for s in ((5, 3), (3,))]

    @tf.function
    def step(t):
        with tf.GradientTape() as tape:
            # Gradients far from zero: Adam divides by their size, so near zero it would amplify
            # rounding differences into different steps.
            loss = tf.reduce_sum((w[0] - 3.0) ** 2 * t) + tf.reduce_sum(tf.exp(w[1]))
        optimizer.apply_gradients(zip(tape.gradient(loss, w), w))

    for t in range(1, steps + 1):
        step(tf.constant(float(t)))
    return [v.numpy() for v in w] + [v.numpy() for v in optimizer.variables]


@pytest.mark.parametrize("kind,kwargs", [
    ("Adam", dict(learning_rate=0.1)), ("AdamW", dict(learning_rate=0.1, weight_decay=0.05)),
    ("SGD", dict(learning_rate=0.05, momentum=0.9)), ("SGD", dict(learning_rate=0.05, momentum=0.9, nesterov=True))])
def test_fused_optimizers_equal_keras_optimizers(kind, kwargs):
    want = _train(getattr(keras.optimizers, kind)(**kwargs))
    got = _train(getattr(optimizers, kind)(**kwargs))
    assert len(got) == len(want)      # the same state variables, so checkpoints carry over
    # The Adam kernel computes 1 - beta in float32 where Keras computes it in double: for beta_2 =
    # 0.999 that is a 1.3e-5 relative difference in the second moment's update.
    rtol = 1e-4 if kind.startswith("Adam") else 1e-6
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-6)
    assert not np.allclose(got[0], np.random.default_rng(0).standard_normal((5, 3)))     # it did move


@pytest.mark.parametrize("kernel_size,strides,activation,matmul", [
    (1, 1, None, True), (1, 1, "relu", True), (1, 2, None, False), (3, 1, None, False)])
def test_conv2d_equals_keras_conv2d_and_runs_1x1_as_a_matmul(kernel_size, strides, activation, matmul):
    x = tf.random.stateless_normal((3, 6, 5, 24), seed=(3, 4))
    ref = keras.layers.Conv2D(16, kernel_size, strides=strides, activation=activation, bias_initializer="random_normal")
    fast = Conv2D(16, kernel_size, strides=strides, activation=activation)
    ref.build(x.shape)
    fast.build(x.shape)
    fast.set_weights(ref.get_weights())
    assert fast._as_matmul(x) == matmul
    _assert_same_forward_and_grads(_forward_and_grads(fast, fast.kernel, x), _forward_and_grads(ref, ref.kernel, x))
    graph = tf.function(fast).get_concrete_function(tf.TensorSpec(x.shape)).graph
    ops = {op.type for op in graph.get_operations()}
    assert ("MatMul" in ops) == matmul and ("Conv2D" in ops) != matmul


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("size,cin", [(5, 96), (5, 48), (9, 96)])
def test_shuffle_in_front_of_the_grouped_conv_equals_shuffling_the_activations(monkeypatch, path, size, cin):
    """Small maps (5x5) take one matmul per group, with the shuffle folded where its runs line up with
    the groups (96 / 16 = 6 channels, 3 per group; not 48 / 16 = 3); a 9x9 map the grouped conv."""
    from mail_tf.layers.conv import SMALL_MAP_PIXELS

    x = tf.random.stateless_normal((2, size, size, cin), seed=(7, 8))
    shuffle = ChannelShuffle(16)
    conv = GroupedPointwiseConv2D(32, groups=2, bias_initializer="random_normal")
    conv.build(x.shape)
    _on_path(monkeypatch, conv, path)
    np.testing.assert_array_equal(shuffle(x).numpy(), tf.gather(x, shuffle.permutation(cin), axis=-1).numpy())
    y0, gx0, gk0 = _forward_and_grads(lambda t: conv(shuffle(t)), conv.kernel, x)
    plain = conv(x).numpy()
    conv.input_shuffle = 16
    _assert_same_forward_and_grads(_forward_and_grads(conv, conv.kernel, x), (y0, gx0, gk0))
    assert np.abs(y0 - plain).max() > 1e-2     # the order matters: the test could fail
    # The block-diagonal matmul folds the shuffle into the kernel's rows, the matmul per group into
    # its view of the channels where it can: no transpose of the activations there.
    if path == "as_conv":
        transposed = True
    elif size * size <= SMALL_MAP_PIXELS:
        transposed = cin == 48
    else:
        transposed = path == "grouped"
    # the shuffle's transpose is of the (B, H, W, G, C/G) maps; a kernel's is of lower rank
    assert any(op.type == "Transpose" and op.inputs[0].shape.rank >= 4 for op in _ops(conv, x.shape)) == transposed


@pytest.mark.parametrize("shape,k,s", [((3, 1, 1, 8), 5, 1), ((3, 1, 1, 8), 3, 1), ((3, 2, 2, 8), 5, 1),
                                       ((3, 2, 3, 8), 5, 1), ((3, 5, 4, 8), 5, 1), ((3, 6, 6, 8), 3, 1),
                                       ((3, 7, 7, 8), 5, 2), ((3, 8, 8, 8), 5, 2), ((3, 2, 2, 8), 5, 2),
                                       ((3, 1, 1, 8), 5, 2), ((3, 6, 5, 8), 3, 2)])
def test_depthwise_conv2d_equals_tf_in_output_and_both_gradients(shape, k, s):
    """Cropped kernels on small maps and the large-kernel filter gradient (mail_tf.layers.depthwise)."""
    from mail_tf.layers import depthwise_conv2d

    gen = tf.random.Generator.from_seed(k * 10 + shape[1])
    x, kernel = gen.normal(shape), gen.normal((k, k, shape[3], 1))
    dy = gen.normal((shape[0], -(-shape[1] // s), -(-shape[2] // s), shape[3]))

    def run(conv):
        @tf.function
        def f(x, kernel):
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                y = conv(x, kernel)
                loss = tf.reduce_sum(y * dy)
            return [y, *tape.gradient(loss, [x, kernel])]
        return f(x, kernel)

    want = run(lambda x, kernel: tf.nn.depthwise_conv2d(x, kernel, (1, s, s, 1), "SAME"))
    got = run(lambda x, kernel: depthwise_conv2d(x, kernel, s))
    for name, a, b in zip(["output", "input gradient", "filter gradient"], got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)
