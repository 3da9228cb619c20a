"""Trainability at initialisation (docs/TRAINABILITY.md): attention gates that are not saturated, and
a signal at MAIL's heads on the plain pair's scale. These would have caught the notebook's global
sum pool, which saturated most channel-attention gates at 64 px and above."""

from pathlib import Path

import keras
import numpy as np
import pytest

import mail_tf
from mail_tf.diagnostics import gate_saturation, saturation_by_kind, signal_propagation
from conftest import assert_refused

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# Bounds at initialisation, 64 and 224 px, real images (measured: docs/TRAINABILITY.md §2). A_f and
# A_s keep the paper's own saturation (sigma of ~4x the DCT coefficients, of pooled maxima); they
# reach the signal only through A_m, which cannot saturate, so they carry no bound here.
BOUNDS = {"ChannelAttention": 0.35, "EMCAM.A_m": 0.01, "MFIFA.descriptor": 0.35}
# MAIL's heads read features 3.7x smaller than the pair's at init (measured at 64 px: every ERLA
# starts as its shortcut, zero-gamma, and EMCAM's A_m is ~0.7 per stage): smaller initial logits,
# not a lost signal; the spread between images is what must survive.
HEAD_RMS_FACTOR = 5.0


def _real_images(size, n=4):
    """n real images per modality: HAM10000 and brain MRI from ../shared/data when present, else the
    embedded MedMNIST pair (upsampled 28 px images are smoother, so the bounds are tested on both)."""
    from mail_tf.data.images import load_images

    ham, mri = SHARED / "ham10000" / "images", SHARED / "brain_tumor_mri" / "Testing"
    if ham.is_dir() and mri.is_dir():
        files = [sorted(ham.glob("*.jpg"))[:n], [sorted((mri / c).glob("*.jpg"))[0] for c in
                                                 ("glioma", "meningioma", "notumor", "pituitary")][:n]]
        batches = [load_images([str(f) for f in fs], size)[0] for fs in files]
    else:
        root = Path(__file__).resolve().parents[1] / "datasets" / "medmnist"
        batches = [load_images(np.load(root / f"{flag}.npz")["test_images"][:n], size)[0]
                   for flag in ("breastmnist", "pneumoniamnist")]
    return [b.astype("float32") / 255.0 for b in batches]


def _model(name, size, **options):
    keras.utils.set_random_seed(0)
    return mail_tf.build_model(name, {"a": 7, "b": 4}, input_shape=(size, size, 3), **options)


@pytest.mark.parametrize("name", ["mail_rn18", "robust_mail"])
@pytest.mark.parametrize("size", [64, 224])
def test_no_attention_gate_starts_saturated(name, size):
    kinds = saturation_by_kind(gate_saturation(_model(name, size), _real_images(size)))
    assert {"ChannelAttention", "MFIFA.descriptor", "MFIFA.A_f", "EMSCA.A_s", "EMCAM.A_m"} <= set(kinds)
    for kind, bound in BOUNDS.items():
        assert kinds[kind] <= bound, (kind, kinds)


def test_the_saturation_check_catches_the_notebook_form():
    """The same measurement on the notebook's form (global sum pool, Keras init) fails the bound."""
    model = _model("mail_rn18", 64, ca_pools="notebook", depthwise_init="keras", zero_init_residual=False)
    rows = gate_saturation(model, _real_images(64))
    assert saturation_by_kind(rows)["ChannelAttention"] > BOUNDS["ChannelAttention"]
    stage1 = [r["saturated"] for r in rows if r["kind"] == "ChannelAttention" and r["stage"] == 1]
    assert min(stage1) > 0.5


def test_signal_at_the_heads_is_on_the_plain_pairs_scale():
    images = _real_images(64)
    mail = signal_propagation(_model("mail_rn18", 64), images)
    pair = signal_propagation(_model("resnet18_pair", 64), images)
    ratio = mail["head_rms"] / pair["head_rms"]
    assert 1 / HEAD_RMS_FACTOR <= ratio <= HEAD_RMS_FACTOR, (mail["head_rms"], pair["head_rms"])
    assert mail["head_spread"] >= 0.5 * pair["head_spread"], (mail["head_spread"], pair["head_spread"])
    assert [r["stage"] for r in mail["stages"]] == [1, 2, 3, 4]
    assert all(r["grad_norm"] > 0 for r in mail["stages"])


def test_trainability_cli_reports_every_variant_and_refuses_bad_sizes(tmp_path):
    import json
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "experiments.trainability", "--models", "mail_rn18,resnet18_pair",
                    "--sizes", "32", "--signal_size", "32", "--num", "4", "--out", str(tmp_path)],
                   capture_output=True, text=True, check=True)
    saturation = json.loads((tmp_path / "saturation.json").read_text())
    assert set(saturation["mail_rn18"]) == {"default", "neutral", "notebook"}
    by_kind = saturation["mail_rn18"]["neutral"]["32"]["by_kind"]
    assert by_kind["ChannelAttention"] == 0.0 and by_kind["EMCAM.A_m"] == 0.0
    signal = json.loads((tmp_path / "signal.json").read_text())
    assert [r["stage"] for r in signal["resnet18_pair"]["default"]["stages"]] == [1, 2, 3, 4]
    assert (tmp_path / "saturation.png").stat().st_size > 10_000
    proc = subprocess.run([sys.executable, "-m", "experiments.trainability", "--sizes", "16"],
                          capture_output=True, text=True)
    assert_refused(proc, "--sizes=16: expected")
