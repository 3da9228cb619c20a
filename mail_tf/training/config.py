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


SPLIT_PROTOCOLS = ("grouped", "notebook")
# Settings that change how a run reads its data, not what it trains on (streaming decodes the same
# pixels as in-memory decoding): a resume may change them, and reports do not group runs by them.
HOW_NOT_WHAT = ("streaming",)
STREAMING = ("auto", "on", "off")


def setting(default, help, choices=None):
    """A TrainConfig field with the help text (and choices) its command-line flag is defined from
    (`experiments.train`: one flag per field, see `flag_settings`)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass
class TrainConfig:
    dataset: str = "medmnist"            # the flag is experiments.train's own (it picks the defaults)
    model: str = setting("mail_rn18", "Model preset (mail = mail_rn18, mail_rn50, robust_mail, resnet18_pair, "
                         "resnet50_pair, drifa_net).")
    width: float = setting(1.0, "Width multiplier of the model (1.0: the paper's widths).")
    model_options: dict = None           # extra builder arguments (the repeatable flag --model_option)
    image_size: int = setting(128, "Square input size (medmnist: 48).")
    batch_size: int = setting(32, "Image pairs per step (medmnist: 64).")
    epochs: int = setting(100, "Maximum epochs (medmnist: 20).")
    seed: int = setting(0, "Seed of initialisation, splits, pairing, shuffling and augmentation.")
    optimizer: str = setting("adam", "adam: the notebook's; sgd: the paper's.", OPTIMIZERS)
    learning_rate: float = setting(None, "Initial learning rate (default adam 1e-4, sgd 1e-3; medmnist 1e-3).")
    momentum: float = setting(0.9, "SGD momentum (the paper does not state it).")
    weight_decay: float = setting(0.0, "Decoupled weight decay on kernels (applied by the optimiser).")
    l2: float = setting(0.0, "L2 penalty on conv/dense kernels added to the loss.")
    loss_weights: list = setting(None, "TMTL weight per task, in task order (default 1/T each).")
    lr_schedule: str = setting("plateau", "plateau: ReduceLROnPlateau on the validation loss (the paper's); "
                               "cosine: decay to --min_lr over --epochs (medmnist).", SCHEDULES)
    lr_factor: float = setting(0.1, "ReduceLROnPlateau factor on the validation loss.")
    lr_patience: int = setting(10, "Plateau schedule: epochs without improvement before the LR drops.")
    min_lr: float = setting(1e-6, "Floor of the learning rate.")
    early_stopping_patience: int = setting(20, "Epochs without improvement before stopping; 0: off (medmnist: 8).")
    bn_momentum: float = setting(None, "BatchNorm moving-average momentum (default: the model's 0.99; "
                                 "medmnist: 0.9).")
    paper_augment: bool = setting(True, "The paper's 4x augmented training set (medmnist: off).")
    random_augment: bool = setting(False, "Random rotation/translation on the fly (medmnist: on).")
    shuffle_pairs: bool = setting(False, "Draw new cross-modality partners every epoch instead of one fixed "
                                  "pairing (the notebooks').")
    ema_decay: float = setting(0.0, "Per-step decay of an exponential moving average of the weights (and BN "
                               "statistics) that is validated, kept and exported instead of the raw weights, "
                               "e.g. 0.995; 0: off (the default).")
    precision: str = setting("float32", "Mixed precision (GPU).", PRECISIONS)
    jit_compile: bool = setting(False, "XLA-compile the train step (GPU; slower on CPU).")
    strategy: str = setting("default", "tf.distribute strategy: one device, this machine's devices, or the "
                            "workers of TF_CONFIG (MultiWorkerMirroredStrategy; the chief alone writes --run).",
                            STRATEGIES)
    data_dir: str = setting(None, "Folder holding the downloaded datasets (default $MAIL_TF_DATA_DIR or ./data).")
    manifest: str = setting(None, "Reuse the splits of this split manifest (splits.json).")
    split_protocol: str = setting("grouped", "grouped: official splits kept, the rest split with whole lesions "
                                  "on one side. notebook: the reference notebooks' leaky protocol (augment 4x, "
                                  "then split at image level), to measure the leak; needs --nopaper_augment and "
                                  "prints a warning.", SPLIT_PROTOCOLS)
    streaming: str = setting("auto", "Image files: on: decoded in tf.data as batches need them (data larger "
                             "than memory); off: decoded into memory once; auto: on above MAIL_TF_STREAM_BYTES "
                             "(4 GiB) decoded. Same pixels.", STREAMING)
    skip_bad_images: bool = setting(False, "Skip unreadable images (listed) instead of failing.")
    # Adversarial training (Algorithm 2): PGD-style attack crafted per batch, update on X*.
    adversarial: bool = setting(False, "Adversarial training (Algorithm 2): update on attacks crafted per batch.")
    adv_method: str = setting("pgd", "Attack used for adversarial training.", METHODS)
    adv_eps: float = setting(4 / 255, "l-inf radius of the training attack, in [0, 1] pixel units.")
    adv_step: float = setting(None, "Step of the training attack (default adv_eps / 4).")
    adv_iters: int = setting(10, "Iterations of the training attack (k of Algorithm 2).")
    adv_clean_weight: float = setting(0.0, "w in [0, 1): train on (1 - w) * L(X*) + w * L(X), the adversarial "
                                      "and clean losses mixed; 0 (Algorithm 2) trains on the adversarial batch "
                                      "only.")

    @classmethod
    def flag_settings(cls):
        """(name, type, default, help, choices) of every field that is a command-line flag."""
        return [(f.name, f.type, f.default, f.metadata["help"], f.metadata["choices"])
                for f in dataclasses.fields(cls) if "help" in f.metadata]

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
                  (self.split_protocol in SPLIT_PROTOCOLS, "split_protocol", "grouped or notebook"),
                  (self.streaming in STREAMING, "streaming", "auto, on or off"),
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

    def differences(self, other, ignore=("epochs", *HOW_NOT_WHAT)):
        """Settings that differ from `other`, as {name: (mine, theirs)}."""
        a, b = dataclasses.asdict(self), dataclasses.asdict(other)
        return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b[k]}
