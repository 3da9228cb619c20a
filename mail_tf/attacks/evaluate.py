"""Robust accuracy of a multi-task model under the two protocols of ROBUSTNESS_EVAL.md.

paper:    one random-filter draw [A] is held while an attack crafts X*; a fresh draw [I] classifies
          X* (and another the clean images); one classification pass.
adaptive: gradient attacks average the loss over `eot` fresh draws per step (EOT) and use the
          straight-through clip in MAN; every image is classified with `draws` fresh draws and
          scored by the mean accuracy over draws and by majority vote.
A deterministic model (no random filters, no noise, no MC dropout) gives the same numbers under
both, so its adaptive run uses one draw everywhere.

An evaluation runs one or more crafters per batch (restarts, or AutoAttack's components); a sample
counts as robust for a task only if it is classified correctly under every one of them (the
worst case), and each crafter's own robust accuracy is reported too.
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf

from mail_tf.attacks.apgd import apgd
from mail_tf.attacks.gradient import METHODS, SignAttack, per_sample_loss, sign_attack, tmtl_objective
from mail_tf.attacks.square import margin_loss, square_attack
from mail_tf.inference import freeze
from mail_tf.layers.dropout import MCDropout
from mail_tf.layers.noise import noise_layers, straight_through_clips
from mail_tf.layers.random_projection import random_projection_layers, redraw_random_filters
from mail_tf.layers.walk import sublayers

PROTOCOLS = ("paper", "adaptive")
# autoattack-lite: APGD-CE + APGD-DLR + Square, worst case per sample. Not Croce & Hein's standard
# AutoAttack (APGD-CE, APGD-T with 9 targets, FAB-T, Square with 5000 queries), so not named as it.
ATTACKS = METHODS + ("apgd-ce", "apgd-dlr", "square", "autoattack-lite", "transfer")
RENAMED = {"autoattack": "autoattack-lite"}     # old spellings still accepted
# "task" (default): maximise the loss of the task being scored. "tmtl": the paper's protocol, the
# summed loss of every head; its sign gradient goes where the loss is easiest to raise, so it can
# leave one task nearly untouched (README: PGD at eps 0.5 left 42 % of one task correct).
LOSSES = ("task", "tmtl")


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """What to run: the attack's name and budget (see ATTACKS)."""

    name: str = "pgd"
    eps: float = 4 / 255
    step: float = None         # sign attacks; None: eps / 4
    iters: int = 10            # gradient attacks (APGD default 100 via the CLI)
    restarts: int = 1          # independent random starts; worst case over them
    queries: int = 1000        # Square
    loss: str = "task"         # maximise the scored task's own loss, or "tmtl": every head's (the paper's)

    def __post_init__(self):
        object.__setattr__(self, "name", RENAMED.get(self.name, self.name))
        if self.name not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {self.name!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.restarts < 1 or self.queries < 1 or self.iters < 1:
            raise ValueError(f"restarts, queries and iters must be at least 1, got {self.restarts}, "
                             f"{self.queries}, {self.iters}")
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps!r}")

    def components(self, protocol):
        """The named crafters this attack runs under `protocol`."""
        if self.name == "autoattack-lite":
            # The standard version; the adaptive protocol runs AutoAttack's `rand` version (APGD with EOT).
            return ["apgd-ce", "apgd-dlr"] + (["square"] if protocol == "paper" else [])
        return [self.name]


def _batch_agnostic(fn, *example):
    """tf.function of fn traced once for any batch size (the last batch of a split is smaller);
    scalars (an attack's eps, step and iterations) stay scalars, so a sweep reuses the trace."""
    spec = tf.nest.map_structure(
        lambda t: tf.TensorSpec([None] + list(t.shape[1:]) if t.shape.rank else [], t.dtype), example)
    return tf.function(fn, input_signature=list(spec))


class _Lazy:
    """Compile `fn` with a batch-agnostic signature on its first call."""

    def __init__(self, fn):
        self.fn, self.compiled = fn, None

    def __call__(self, *args):
        if self.compiled is None:
            self.compiled = _batch_agnostic(self.fn, *args)
        return self.compiled(*args)


def is_randomized(model):
    """Whether the model's output changes from call to call at inference."""
    return bool(random_projection_layers(model) or noise_layers(model)
                or any(isinstance(l, MCDropout) for l in sublayers(model, include_self=False)))


def _objective(model, labels, kind, samples):
    """Per-sample loss to maximise; with samples > 1 the mean over that many fresh draws with
    straight-through clips (the adaptive attacker's EOT). With one draw it also says which samples
    are fooled, so the attacks keep any iterate that broke a sample (AutoAttack's rule; under EOT
    the final iterate is classified over fresh draws instead)."""
    if samples == 1:
        return tmtl_objective(model, labels, kind=kind, track_fooled=True)
    objective = tmtl_objective(model, labels, kind=kind)

    def loss_fn(images):
        def body(i, total):
            redraw_random_filters(model)
            with straight_through_clips(model):
                return i + 1, total + objective(images)

        zero = tf.zeros([tf.shape(images[0])[0]])
        _, total = tf.while_loop(lambda i, _: i < samples, body, (tf.constant(0), zero))
        return total / samples

    return loss_fn


class Evaluator:
    """Compiled crafting and classification of one model under one protocol."""

    def __init__(self, model, spec, protocol="paper", eot=20, draws=10, surrogate=None, perturb=None, log=None):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if spec.name == "transfer" and surrogate is None:
            raise ValueError("the transfer attack needs a surrogate model")
        self.model, self.spec, self.protocol = model, spec, protocol
        self.randomized = is_randomized(model)
        # A deterministic model runs on its weights frozen as constants (faster, mail_tf.inference);
        # a randomised one as itself, so that redraws and straight-through clips act on every call.
        self.forward = model if self.randomized else freeze(model)
        adaptive = protocol == "adaptive" and self.randomized
        self.samples = eot if adaptive else 1
        self.passes = draws if adaptive else 1
        self.surrogate, self.perturb, self.log = surrogate, perturb, log
        self.components = spec.components(protocol)
        self._votes = _Lazy(self._vote_counts)
        self._craft = {name: self._make_crafter(name) for name in self.components}
        forward = self.forward
        self._margin = _Lazy(lambda images, labels: margin_loss(labels, forward(list(images), training=False)))
        self._loss = _Lazy(lambda images, labels: per_sample_loss(labels, forward(list(images), training=False)))

    def _vote_counts(self, images):
        """{task: (batch, classes)} predicted-class counts over `passes` fresh draws ([I])."""
        model, forward = self.model, self.forward

        def body(i, counts):
            redraw_random_filters(model)
            logits = forward(images, training=False)
            return i + 1, {t: counts[t] + tf.one_hot(tf.argmax(logits[t], -1), logits[t].shape[-1]) for t in counts}

        images = list(images)
        redraw_random_filters(model)
        first = forward(images, training=False)
        counts = {t: tf.one_hot(tf.argmax(v, -1), v.shape[-1]) for t, v in first.items()}
        return tf.while_loop(lambda i, _: i < self.passes, body, (tf.constant(1), counts))[1]

    def _make_crafter(self, name):
        model = self.model
        if name == "square":
            return None                                   # python loop around a compiled forward
        target = self.surrogate if name == "transfer" else self.forward
        samples = 1 if name == "transfer" else self.samples
        kind = "dlr" if name == "apgd-dlr" else "ce"

        method = "pgd" if name == "transfer" else name

        def craft(images, labels, seed, eps, step, iters):
            redraw_random_filters(model)                  # [A] held while crafting
            objective = _objective(target, labels, kind, samples)
            images = list(images)
            if name.startswith("apgd"):
                return apgd(objective, images, eps, iters, seed=seed, perturb=self.perturb)
            return sign_attack(objective, images, SignAttack(method), seed=seed, perturb=self.perturb,
                               budget=(eps, step, iters))

        return _Lazy(craft)

    def craft(self, name, images, labels, seed, spec=None):
        """Adversarial images of crafter `name` with the budget of `spec` (default: the evaluator's);
        the budget enters as tensors, so other budgets reuse the compiled crafter."""
        spec = spec or self.spec
        if name == "square":
            redraw_random_filters(self.model)
            adv, _ = square_attack(lambda xs: self._margin(tuple(tf.constant(x) for x in xs), labels).numpy(),
                                   [np.asarray(x) for x in images], spec.eps,
                                   spec.queries, seed=int(seed[0]) * 100003 + int(seed[1]),
                                   perturb=self.perturb)
            return [tf.constant(a) for a in adv]
        step = spec.eps / 4 if spec.step is None else spec.step
        return self._craft[name](tuple(images), labels, tf.constant(seed, tf.int32), tf.constant(spec.eps, tf.float32),
                                 tf.constant(step, tf.float32), tf.constant(spec.iters, tf.int32))

    def votes(self, images):
        return {t: v.numpy() for t, v in self._votes(tuple(images)).items()}

    def mean_loss(self, images, labels):
        return float(tf.reduce_mean(self._loss(tuple(images), labels)))


def robust_accuracy(model, datasets, spec, protocol="paper", eot=20, draws=10, seed=0, limit=None,
                    surrogate=None, perturb=None, log=None, cache=None):
    """Clean and robust accuracy per task, worst case over the attack's crafters and restarts.

    datasets: {task: dataset of (images, {every task: labels})} (`mail_tf.data.eval_datasets(...,
      all_labels=True)`); the key's task is scored; the attack maximises the loss of all tasks
      (spec.loss "tmtl") or of the scored task alone ("task").
    limit: attack at most this many images per task.
    cache: a dict kept between calls: their compiled evaluators are reused, so a sweep over eps,
      step or iterations traces each attack once. They hold a deterministic model's weights as they
      were when made: use a new cache after changing the weights.
    Returns {task: {count, clean_accuracy, robust_accuracy, by_attack: {crafter: accuracy},
    loss_clean, loss_adversarial, seconds, and for a randomised model under the adaptive protocol
    clean_/robust_majority_accuracy}}.
    """
    if isinstance(spec, SignAttack):                      # convenience: a bare sign attack
        spec = AttackSpec(spec.method, spec.eps, spec.step, spec.iters)
    cache = {} if cache is None else cache

    def make(task):   # compiled per task when the labels attacked differ per task
        key = (id(model), spec.name, spec.loss, protocol, eot, draws, id(surrogate), str(perturb),
               task if spec.loss == "task" else None)
        if key not in cache:
            cache[key] = Evaluator(model, spec, protocol, eot, draws, surrogate, perturb, log)
        return cache[key]

    out = {}
    for task, ds in datasets.items():
        ev = make(task)
        start, items, attacks, losses = time.time(), [], [], []
        for b, images, labels in _batches(ds, task, limit, spec.loss):
            item, by_attack, loss = _score_batch(ev, task, b, images, labels, spec, seed)
            items.append(item)
            attacks.append(by_attack)
            losses.append(loss)
            if log:
                worst = np.concatenate([i["robust"] for i in items])
                log(f"  {task}: {len(worst)} images, robust accuracy so far {worst.mean():.3f} "
                    f"({time.time() - start:.0f} s)")
        out[task] = _summary(items, attacks, losses, ev, time.time() - start)
    return out


def _batches(ds, task, limit, loss):
    """(batch index, images, labels) of `ds`, cut to `limit` items in all; the labels are those the
    attack maximises the loss of: every task's ("tmtl") or the scored task's ("task")."""
    count = 0
    for b, (images, labels) in enumerate(ds):
        if limit is not None and count >= limit:
            return
        keep = int(labels[task].shape[0]) if limit is None else min(int(labels[task].shape[0]), limit - count)
        labels = {t: y[:keep] for t, y in labels.items() if loss != "task" or t == task}
        count += keep
        yield b, [x[:keep] for x in images], labels


def _score_batch(ev, task, b, images, labels, spec, seed):
    """One batch of `task`, per item: the clean and worst-case fraction of draws classified right and
    majority votes ({clean, clean_vote, robust, robust_vote}), each crafter's worst fraction, and the
    first crafter's summed (clean, adversarial) loss."""
    y = labels[task].numpy()
    rows = np.arange(len(y))
    votes = ev.votes(images)[task]
    n = votes[0].sum()
    item = {"clean": votes[rows, y] / n, "clean_vote": votes.argmax(1) == y,
            "robust": np.ones(len(y)), "robust_vote": np.ones(len(y), bool)}
    by_attack, losses = {name: np.ones(len(y)) for name in ev.components}, None
    for name in ev.components:
        for r in range(spec.restarts):
            adv = ev.craft(name, images, labels, (seed + 1000 * r, b), spec)
            adv_votes = ev.votes(adv)[task]
            right = adv_votes[rows, y] / n
            item["robust"] = np.minimum(item["robust"], right)
            item["robust_vote"] &= adv_votes.argmax(1) == y
            by_attack[name] = np.minimum(by_attack[name], right)
            if losses is None:
                losses = (ev.mean_loss(images, labels) * len(y), ev.mean_loss(adv, labels) * len(y))
    return item, by_attack, losses


def _summary(items, attacks, losses, ev, seconds):
    """robust_accuracy's result for one task from its batches' `_score_batch` parts."""
    count = sum(len(i["clean"]) for i in items)
    mean = lambda key, parts: float(np.concatenate([p[key] for p in parts]).mean()) if count else 0.0
    result = {"count": count, "clean_accuracy": mean("clean", items), "robust_accuracy": mean("robust", items),
              "by_attack": {name: mean(name, attacks) for name in ev.components},
              "loss_clean": sum(l[0] for l in losses) / max(count, 1),
              "loss_adversarial": sum(l[1] for l in losses) / max(count, 1), "seconds": seconds}
    if ev.passes > 1:
        result["clean_majority_accuracy"] = mean("clean_vote", items)
        result["robust_majority_accuracy"] = mean("robust_vote", items)
    return result
