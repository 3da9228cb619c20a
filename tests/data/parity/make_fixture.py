"""Writes the parity fixture of tests/test_parity.py: tiny models' weights and their logits.

Run once with the code *before* a change to the numerics' implementation (fused batch norm, fused
optimiser steps, folded channel shuffle, ...); the test then checks that the new code, loading
these weights, gives the same logits. Written at 2a1707c (Keras batch norm, unfused shuffle).

  .venv/bin/python tests/data/parity/make_fixture.py
"""

import os

import keras
import numpy as np

from mail_tf import build_model

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = {"mail_rn18": dict(width=0.125), "resnet18_pair": dict(width=0.125), "drifa_net": dict(width=0.0625)}
TASKS = {"task1": 3, "task2": 4}
SIZE, BATCH = 32, 4


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(size=(BATCH, SIZE, SIZE, 3)).astype("float32") for _ in TASKS]


def build(name):
    keras.utils.set_random_seed(0)
    return build_model(name, TASKS, input_shape=(SIZE, SIZE, 3), **MODELS[name])


def main():
    for name in MODELS:
        model = build(name)
        # Zero-initialised heads and scales and fresh batch-norm statistics would hide errors:
        # perturb every weight (moving variances stay positive). Stored as float16: rounded to it first, so the logits belong to
        # exactly these weights.
        rng = np.random.default_rng(1)
        for w in model.weights:
            v = np.asarray(w)
            v = v + 0.1 * rng.standard_normal(v.shape) * max(float(v.std()), 0.1)
            if "moving_variance" in w.path:
                v = np.abs(v) + 0.05
            w.assign(v.astype("float16").astype("float32"))
        logits = model(inputs(0), training=False)
        # Weights in model.weights order (compact: an .h5 file is mostly per-variable overhead).
        np.savez_compressed(os.path.join(HERE, f"{name}.npz"),
                            **{f"w{i:04d}": np.asarray(w).astype("float16") for i, w in enumerate(model.weights)},
                            **{f"logits_{k}": np.asarray(v) for k, v in logits.items()})
        print(name, {k: tuple(v.shape) for k, v in logits.items()})


if __name__ == "__main__":
    main()
