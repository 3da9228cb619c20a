"""The FLOP counter against hand counts; grouped convolutions are charged their real cost."""

import keras
import pytest

import mail_tf
from mail_tf.flops import count_costs, count_flops
from mail_tf.layers import GroupedPointwiseConv2D


def test_hand_count_on_a_small_model():
    inp = keras.Input((16, 16, 8))
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv")(inp)                        # -> 16x16x16
    x = keras.layers.Conv2D(32, 1, strides=2, groups=4, use_bias=False, name="gconv")(x)   # -> 8x8x32
    x = keras.layers.DepthwiseConv2D(5, padding="same", name="dw")(x)                      # -> 8x8x32
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10, name="fc")(x)
    model = keras.Model(inp, out)
    hand = {
        "conv": 2 * 16 * 16 * 16 * (3 * 3 * 8) + 16 * 16 * 16,
        "gconv": 2 * 8 * 8 * 32 * (16 // 4),
        "dw": 2 * 8 * 8 * 32 * 25 + 8 * 8 * 32,
        "fc": 2 * 32 * 10 + 10,
    }
    per_layer = count_flops(model, per_layer=True)
    assert per_layer == hand
    assert count_flops(model) == sum(hand.values())


def test_fast_grouped_conv_is_charged_like_the_keras_grouped_conv():
    def model(layer):
        inp = keras.Input((8, 8, 64))
        return keras.Model(inp, layer(inp))
    ours = count_flops(model(GroupedPointwiseConv2D(64, groups=16)))
    keras_grouped = count_flops(model(keras.layers.Conv2D(64, 1, groups=16)))
    assert ours == keras_grouped == 2 * 8 * 8 * 64 * 4 + 8 * 8 * 64


def test_nested_layers_and_repeated_calls_are_all_counted():
    """EMSCA's shared MSGDC' runs on every modality and again on S(x): every call counts."""
    model = mail_tf.build_mail({"a": 2, "b": 2}, (32, 32, 3), width=0.25)
    per_layer = count_flops(model, per_layer=True)
    emsca_gpc = [k for k in per_layer if "stage1_emcam" in k and k.endswith("msgdc/gpc")]
    assert len(emsca_gpc) == 1
    c = 16  # stage-1 width at 0.25; 8x8 maps at 32x32 input; 2 modalities x (S(x) + S(S(x)))
    assert per_layer[emsca_gpc[0]] == 2 * (2 * 8 * 8 * c * (c // 16) + 2 * 1 * 1 * c * (c // 16))
    assert any(k.endswith("mfifa") for k in per_layer)  # the channel DCT


@pytest.mark.parametrize("name,low,high", [("mail_rn18", 1.25, 1.40), ("resnet18_pair", 2.3, 2.45)])
def test_gflops_at_paper_setting(name, low, high):
    model = mail_tf.build_model(name, {"a": 5, "b": 7}, input_shape=(128, 128, 3))
    assert low < count_flops(model) / 1e9 < high


def test_costs_in_the_three_conventions_by_hand():
    # 8x8x32 input; grouped 1x1 conv to 64 channels in 4 groups (bias), then a dense 1x1 conv (no bias).
    x = keras.Input((8, 8, 32))
    y = GroupedPointwiseConv2D(64, groups=4)(x)
    y = keras.layers.Conv2D(16, 1, use_bias=False)(y)
    costs = count_costs(keras.Model(x, y))
    grouped_macs, dense_macs, bias = 64 * 64 * (32 // 4), 64 * 16 * 64, 64 * 64
    assert costs["macs"] == grouped_macs + dense_macs
    assert costs["flops"] == 2 * (grouped_macs + dense_macs) + bias
    assert costs["flops_grouped_as_dense"] == 2 * (4 * grouped_macs + dense_macs) + bias
