"""Custom Keras layers of mail-tf, all registered for serialisation under `mail_tf>`."""

from mail_tf.layers.batch_norm import BatchNormalization
from mail_tf.layers.conv import ChannelShuffle, Conv2D, GroupedPointwiseConv2D, block_diagonal
from mail_tf.layers.dct import channel_dct, dct_matrix
from mail_tf.layers.defense import Defense
from mail_tf.layers.depthwise import DepthwiseConv2D, depthwise_conv2d
from mail_tf.layers.dropout import Dropout, MCDropout
from mail_tf.layers.drifa import MFA, MIFA, RRA
from mail_tf.layers.emcam import EMCAM, EMSCA, FUSIONS, MFIFA
from mail_tf.layers.inputs import SameBatch
from mail_tf.layers.noise import AttentionNoise, clip_unit, noise_layers, straight_through_clips
from mail_tf.layers.random_projection import (RandomProjectionDepthwiseConv2D, RandomProjectionPointwiseConv2D,
                                              random_projection_layers, redraw_random_filters)
from mail_tf.layers.residual import EMILA, ERLA, MSGDC, ChannelAttention, ResidualBlock

__all__ = ["AttentionNoise", "BatchNormalization", "ChannelAttention", "ChannelShuffle", "Conv2D", "Defense", "DepthwiseConv2D", "Dropout", "EMCAM", "EMILA", "EMSCA",
           "ERLA", "FUSIONS",
           "GroupedPointwiseConv2D", "MCDropout", "MFA", "MFIFA", "MIFA", "MSGDC", "RRA",
           "RandomProjectionDepthwiseConv2D", "RandomProjectionPointwiseConv2D", "ResidualBlock", "SameBatch",
           "block_diagonal",
           "channel_dct", "clip_unit", "dct_matrix", "depthwise_conv2d", "noise_layers", "random_projection_layers",
           "redraw_random_filters", "straight_through_clips"]
