"""mail_tf.threads: the "auto" rule, and what a call does once TensorFlow's runtime has started."""

import pytest
import tensorflow as tf

from conftest import assert_refused, cli
from mail_tf import threads


@pytest.mark.parametrize("cores,gpus,want", [(2, [], 1), (4, [], 1), (8, [], 0), (2, ["GPU:0"], 0)])
def test_auto_is_one_thread_per_op_only_on_a_small_cpu_only_machine(monkeypatch, cores, gpus, want):
    monkeypatch.setattr(threads, "cpu_cores", lambda: cores)
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: gpus)
    assert threads.auto_intra_op() == want


def test_after_the_runtime_started_pools_stay_and_a_different_explicit_size_is_refused():
    tf.constant(1.0) + 1.0      # the runtime runs
    now = threads.configure()  # auto: left as it is, no error
    assert now == {"inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                   "intra_op": tf.config.threading.get_intra_op_parallelism_threads()}
    assert threads.configure(now["inter_op"], now["intra_op"] if now["intra_op"] else threads.AUTO) == now
    with pytest.raises(ValueError, match="already"):
        threads.configure(now["inter_op"] + 3, now["intra_op"] + 5)
    with pytest.raises(ValueError, match=">= 0"):
        threads.configure(-1, 0)


def test_a_cli_sets_the_pools_before_tensorflow_runs_and_refuses_a_bad_count():
    code = ("import sys; from experiments.cli import with_threads; "
            "from experiments import op_profile; from absl import app; import tensorflow as tf; "
            "app.run(with_threads(lambda argv: print(tf.config.threading.get_inter_op_parallelism_threads(), "
            "tf.config.threading.get_intra_op_parallelism_threads())))")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code, "--inter_op_threads", "3", "--intra_op_threads", "1"],
                          capture_output=True, text=True)
    assert proc.stdout.split() == ["3", "1"], proc.stderr[-1000:]
    assert_refused(cli("experiments.op_profile", "--intra_op_threads", "-2"), "--intra_op_threads=-2: expected >= -1")
