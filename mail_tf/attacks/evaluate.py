"""Robust accuracy of a multi-task model under the two protocols of ROBUSTNESS_EVAL.md.

paper:    one random-filter draw [A] while crafting X*, a fresh draw [I] to classify it (and a fresh
          one for the clean images); one forward pass per classification.
adaptive: the attacker averages the loss over `eot` fresh draws at every step (EOT) and uses the
          straight-through clip in MAN; each image is classified with `draws` fresh draws and scored
          by the mean accuracy over draws and by majority vote.
A deterministic model (no random filters, no noise, no MC dropout) gives the same number under both,
so its adaptive run uses one draw for both.
"""

import time

import numpy as np
import tensorflow as tf

from mail_tf.attacks.gradient import sign_attack, tmtl_objective
from mail_tf.layers.dropout import MCDropout
from mail_tf.layers.noise import noise_layers, straight_through_clips
from mail_tf.layers.random_projection import random_projection_layers, redraw_random_filters

PROTOCOLS = ("paper", "adaptive")


def is_randomized(model):
    """Whether the model's output changes from call to call at inference."""
    return bool(random_projection_layers(model) or noise_layers(model)
                or any(isinstance(l, MCDropout) for l in model._flatten_layers(include_self=False)))


def _eot_objective(model, labels, samples):
    """TMTL loss averaged over `samples` fresh draws, straight-through clips (for the adaptive attacker)."""
    objective = tmtl_objective(model, labels)

    def loss_fn(images):
        def body(i, total):
            redraw_random_filters(model)
            with straight_through_clips(model):
                return i + 1, total + objective(images)

        _, total = tf.while_loop(lambda i, _: i < samples, body, (tf.constant(0), tf.constant(0.0)))
        return total / samples

    return loss_fn


def make_attack_step(model, attack, protocol, eot=20, draws=10):
    """A compiled (images, labels, seed) -> (clean votes, adversarial votes, adversarial images).

    votes: {task: (batch, classes)} counts of predicted classes over the classification draws.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    randomized = is_randomized(model)
    samples = eot if (protocol == "adaptive" and randomized) else 1
    passes = draws if (protocol == "adaptive" and randomized) else 1

    def votes(images):
        def body(i, counts):
            redraw_random_filters(model)                     # [I]: a fresh draw per classification
            logits = model(images, training=False)
            return i + 1, {t: counts[t] + tf.one_hot(tf.argmax(logits[t], -1), logits[t].shape[-1])
                           for t in counts}

        redraw_random_filters(model)
        first = model(images, training=False)
        counts = {t: tf.one_hot(tf.argmax(v, -1), v.shape[-1]) for t, v in first.items()}
        _, counts = tf.while_loop(lambda i, _: i < passes, body, (tf.constant(1), counts))
        return counts

    @tf.function
    def step(images, labels, seed):
        images = list(images)
        redraw_random_filters(model)                         # [A]
        if samples > 1:
            objective = _eot_objective(model, labels, samples)
        else:
            objective = tmtl_objective(model, labels)
        adversarial = sign_attack(objective, images, attack, seed=seed)
        return votes(images), votes(adversarial), adversarial

    return step


def robust_accuracy(model, datasets, attack, protocol="paper", eot=20, draws=10, seed=0, limit=None, log=None):
    """Clean and robust accuracy per task.

    datasets: {task: dataset of (images, {every task: labels})} (`mail_tf.data.eval_datasets(...,
      all_labels=True)`); the task named by the key is scored, the attack maximises the loss of all.
    limit: score at most this many images per task (the first ones, in dataset order).
    Returns {task: {count, clean_correct, robust_correct, clean_accuracy, robust_accuracy, and under
    the adaptive protocol of a randomised model robust_majority_accuracy, clean_majority_accuracy},
    "seconds": ...}.
    """
    step = make_attack_step(model, attack, protocol, eot, draws)
    out = {}
    for task, ds in datasets.items():
        start = time.time()
        clean, robust, clean_major, robust_major, count = 0.0, 0.0, 0, 0, 0
        for b, (images, labels) in enumerate(ds):
            if limit is not None and count >= limit:
                break
            clean_votes, adv_votes, _ = step(images, labels, tf.constant([seed, b], tf.int32))
            y = labels[task].numpy()
            keep = len(y) if limit is None else min(len(y), limit - count)
            y = y[:keep]
            cv, av = clean_votes[task].numpy()[:keep], adv_votes[task].numpy()[:keep]
            n_draws = cv.sum(axis=1)[0] if keep else 1
            clean += float((cv[np.arange(keep), y] / n_draws).sum())
            robust += float((av[np.arange(keep), y] / n_draws).sum())
            clean_major += int((cv.argmax(1) == y).sum())
            robust_major += int((av.argmax(1) == y).sum())
            count += keep
            if log:
                log(f"  {task}: {count} images, robust accuracy so far {robust / max(count, 1):.3f}")
        result = {"count": count, "clean_correct": clean, "robust_correct": robust,
                  "clean_accuracy": clean / max(count, 1), "robust_accuracy": robust / max(count, 1),
                  "seconds": time.time() - start}
        if protocol == "adaptive" and is_randomized(model):
            result["clean_majority_accuracy"] = clean_major / max(count, 1)
            result["robust_majority_accuracy"] = robust_major / max(count, 1)
        out[task] = result
    return out
