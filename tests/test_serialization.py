"""`.keras` save/load and SavedModel export give the live model's logits."""

import subprocess
import sys

import keras
import numpy as np

from conftest import images


def test_keras_file_roundtrip(small_mail, tmp_path):
    x = images(batch=3, seed=5)
    ref = small_mail(x, training=False)
    path = tmp_path / "mail.keras"
    small_mail.save(path)
    loaded = keras.saving.load_model(path)
    out = loaded(x, training=False)
    for task in ref:
        np.testing.assert_allclose(out[task].numpy(), ref[task].numpy(), atol=1e-6)
    assert [type(l).__name__ for l in loaded.layers] == [type(l).__name__ for l in small_mail.layers]


def test_savedmodel_export_in_a_process_without_mail_tf(small_mail, tmp_path):
    x = images(batch=3, seed=6)
    ref = small_mail(x, training=False)
    small_mail.export(str(tmp_path / "sm"), verbose=False)
    np.savez(tmp_path / "x.npz", *x)
    # A fresh interpreter that never imports mail_tf: the SavedModel must stand alone.
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"d = np.load(r'{tmp_path / 'x.npz'}'); x = [d['arr_0'], d['arr_1']]\n"
        f"m = tf.saved_model.load(r'{tmp_path / 'sm'}')\n"
        "out = m.serve(x)\n"
        "assert 'mail_tf' not in sys.modules\n"
        f"np.savez(r'{tmp_path / 'out.npz'}', **{{k: v.numpy() for k, v in out.items()}})\n")
    subprocess.run([sys.executable, "-c", script], check=True)
    out = np.load(tmp_path / "out.npz")
    for task in ref:
        np.testing.assert_allclose(out[task], ref[task].numpy(), atol=1e-5)
