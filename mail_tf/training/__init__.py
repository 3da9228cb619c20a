from mail_tf.training.config import EXPERIMENT_DEFAULTS, TrainConfig
from mail_tf.training.losses import tmtl_loss
from mail_tf.training.metrics import classification_metrics
from mail_tf.training.step import make_distributed_predict_fn, make_predict_fn, make_train_step
from mail_tf.training.trainer import RunError, Trainer, finish

__all__ = ["EXPERIMENT_DEFAULTS", "RunError", "TrainConfig", "Trainer", "classification_metrics", "finish",
           "make_distributed_predict_fn", "make_predict_fn", "make_train_step", "tmtl_loss"]
