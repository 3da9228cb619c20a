"""Numerics across fast-path changes: tiny models' weights saved before a change give the same logits.

The fixture (tests/data/parity, written by its make_fixture.py with the code before the fused
batch norm and the folded channel shuffle) holds each model's weights and its inference logits.
"""

import importlib.util
import os

import numpy as np
import pytest

HERE = os.path.join(os.path.dirname(__file__), "data", "parity")
spec = importlib.util.spec_from_file_location("make_fixture", os.path.join(HERE, "make_fixture.py"))
fixture = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fixture)


@pytest.mark.parametrize("name", sorted(fixture.MODELS))
def test_logits_equal_those_of_the_weights_saved_before_the_fast_paths(name):
    saved = np.load(os.path.join(HERE, f"{name}.npz"))
    model = fixture.build(name)
    weights = [saved[k] for k in sorted(k for k in saved.files if k.startswith("w"))]
    assert len(weights) == len(model.weights), "the model's variables changed: rewrite the fixture knowingly"
    for var, value in zip(model.weights, weights):
        assert tuple(var.shape) == value.shape, var.path
        var.assign(value.astype("float32"))
    logits = model(fixture.inputs(0), training=False)
    for task, got in logits.items():
        want = saved[f"logits_{task}"]
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0, err_msg=f"{name} {task}")
        assert np.ptp(want, axis=0).min() > 1e-3     # the logits depend on the images
