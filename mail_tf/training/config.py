"""Training settings: one dataclass, saved as each run's config.json and compared on resume."""

import dataclasses
import json

from mail_tf.attacks.gradient import METHODS, SignAttack

OPTIMIZERS = ("adam", "adamw", "sgd")
DEFAULT_LR = {"adam": 1e-4, "adamw": 1e-4, "sgd": 1e-3}    # the notebook's Adam, the paper's SGD
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("default", "mirrored", "multi_worker")
SCHEDULES = ("plateau", "cosine")

# Settings a named experiment changes from the general defaults (flags given by the user win).
# The embedded MedMNIST images are 28x28: upsampled to 48 (the branches downsample 32x) and trained
# with MedMNIST v2's optimiser (Adam 1e-3) for a budget that, with the install, fits in 30 minutes
# on 2 CPU cores; BN momentum 0.9 because 20 short epochs are too few for 0.99. 48 px for 20 epochs
# beat 64 px for 14 on both tasks' test AUC and on PneumoniaMNIST's accuracy (README).
EXPERIMENT_DEFAULTS = {
    "medmnist": dict(image_size=48, batch_size=64, epochs=20, optimizer="adam", learning_rate=1e-3,
                     lr_patience=3, bn_momentum=0.9, early_stopping_patience=8, paper_augment=False,
                     random_augment=True),
}

# Settings a model preset changes from the experiment's (flags still win): Robust-MAIL is trained
# with Algorithm 2.
MODEL_DEFAULTS = {"robust_mail": dict(adversarial=True)}


@dataclasses.dataclass
class TrainConfig:
    dataset: str = "medmnist"
    model: str = "mail_rn18"
    width: float = 1.0
    model_options: dict = None           # extra builder arguments, e.g. {"rpf_ratio": 0.5, "man": False}
    image_size: int = 128
    batch_size: int = 32
    epochs: int = 100
    seed: int = 0
    optimizer: str = "adam"
    learning_rate: float = None          # None: DEFAULT_LR of the optimiser
    momentum: float = 0.9                # SGD only; the paper does not state it
    weight_decay: float = 0.0            # decoupled, applied by the optimiser
    l2: float = 0.0                      # coupled: l2 * sum of squared conv/dense kernels in the loss
    loss_weights: list = None            # lambda_t per task; None: 1/T each
    lr_schedule: str = "plateau"         # plateau: ReduceLROnPlateau (the paper's); cosine: per epoch
    lr_factor: float = 0.1               # ReduceLROnPlateau on the validation loss
    lr_patience: int = 10
    min_lr: float = 1e-6
    early_stopping_patience: int = 20    # 0: off
    bn_momentum: float = None            # BN moving-average momentum; None: the model's (Keras 0.99)
    paper_augment: bool = True
    random_augment: bool = False
    shuffle_pairs: bool = False      # new partners every epoch (default: one pairing, as the notebooks)
    ema_decay: float = 0.0               # > 0: validate, keep and export an EMA of the weights (per step)
    precision: str = "float32"
    jit_compile: bool = False
    strategy: str = "default"
    data_dir: str = None
    manifest: str = None
    split_protocol: str = "grouped"      # "notebook": the reference's leaky augment-then-split (to measure it)
    streaming: str = "auto"              # image files decoded in tf.data ("on"), into memory ("off"), or by size
    skip_bad_images: bool = False
    # Adversarial training (Algorithm 2): PGD-style attack crafted per batch, update on X*.
    adversarial: bool = False
    adv_method: str = "pgd"
    adv_eps: float = 4 / 255
    adv_step: float = None               # None: adv_eps / 4
    adv_iters: int = 10
    adv_clean_weight: float = 0.0        # weight of the clean loss beside the adversarial one

    def __post_init__(self):
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LR.get(self.optimizer, 1e-4)
        checks = [(self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}"),
                  (self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}"),
                  (self.strategy in STRATEGIES, "strategy", f"one of {STRATEGIES}"),
                  (self.lr_schedule in SCHEDULES, "lr_schedule", f"one of {SCHEDULES}"),
                  (self.epochs >= 1, "epochs", "at least 1"),
                  (self.batch_size >= 1, "batch_size", "at least 1"),
                  (self.learning_rate > 0, "learning_rate", "positive"),
                  (0 < self.lr_factor < 1, "lr_factor", "in (0, 1)"),
                  (self.width > 0, "width", "positive"),
                  (self.adv_method in METHODS, "adv_method", f"one of {METHODS}"),
                  (self.adv_eps > 0, "adv_eps", "positive"),
                  (self.adv_iters >= 1, "adv_iters", "at least 1"),
                  (0 <= self.adv_clean_weight < 1, "adv_clean_weight", "in [0, 1)"),
                  (self.adversarial or not self.adv_clean_weight, "adv_clean_weight",
                   "0 without adversarial training (--adversarial)"),
                  (self.model_options is None or isinstance(self.model_options, dict), "model_options",
                   "a dict of builder arguments"),
                  (self.bn_momentum is None or 0 <= self.bn_momentum < 1, "bn_momentum", "in [0, 1)"),
                  (0 <= self.ema_decay < 1, "ema_decay", "in [0, 1) (0: off)"),
                  (0 <= self.momentum < 1, "momentum", "in [0, 1)"),
                  (self.weight_decay >= 0, "weight_decay", "at least 0"),
                  (self.l2 >= 0, "l2", "at least 0"),
                  (self.lr_patience >= 1, "lr_patience", "at least 1"),
                  (self.min_lr >= 0, "min_lr", "at least 0"),
                  (self.early_stopping_patience >= 0, "early_stopping_patience", "at least 0 (0: off)"),
                  (self.adv_eps <= 1, "adv_eps", "at most 1 (images are in [0, 1])"),
                  (self.adv_step is None or self.adv_step > 0, "adv_step", "positive"),
                  (self.seed >= 0, "seed", "at least 0"),
                  (self.split_protocol in ("grouped", "notebook"), "split_protocol", "grouped or notebook"),
                  (self.streaming in ("auto", "on", "off"), "streaming", "auto, on or off"),
                  (self.split_protocol != "notebook" or not self.paper_augment, "paper_augment",
                   "off (--nopaper_augment) with split_protocol=notebook, whose splits are already augmented")]
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected {expected}")

    def attack(self):
        """The training attack (a `SignAttack`), or None for clean training."""
        if not self.adversarial:
            return None
        return SignAttack(self.adv_method, self.adv_eps, self.adv_step, self.adv_iters)

    @classmethod
    def for_experiment(cls, dataset, **settings):
        """The experiment's defaults, then the model's, overridden by `settings` (None values are ignored)."""
        given = {k: v for k, v in settings.items() if v is not None}
        model = given.get("model", cls.model)
        return cls(dataset=dataset, **{**EXPERIMENT_DEFAULTS.get(dataset, {}), **MODEL_DEFAULTS.get(model, {}),
                                       **given})

    def build_model(self, num_classes, **overrides):
        """The run's model, untrained: its preset at its image size and width with its `model_options`
        (`overrides` on top, e.g. mc_dropout=True). The one way every tool rebuilds a run's model."""
        from mail_tf.models.registry import build_model

        options = {**(self.model_options or {}), **overrides}
        try:   # options passed through a builder's **kwargs are only checked here
            return build_model(self.model, num_classes, (self.image_size, self.image_size, 3), width=self.width,
                               **options)
        except TypeError as e:
            raise ValueError(f"model_options {options} do not fit {self.model}: {e}") from None

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}")
        return cls(**values)

    def differences(self, other, ignore=("epochs", "streaming")):   # streaming: same pixels either way
        """Settings that differ from `other`, as {name: (mine, theirs)}."""
        a, b = dataclasses.asdict(self), dataclasses.asdict(other)
        return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b[k]}
