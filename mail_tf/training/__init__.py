from mail_tf.training.losses import tmtl_loss
from mail_tf.training.step import make_predict_fn, make_train_step

__all__ = ["make_predict_fn", "make_train_step", "tmtl_loss"]
