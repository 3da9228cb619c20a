"""Two local workers under MultiWorkerMirroredStrategy (TF_CONFIG, localhost ports, CPU): they train
in lock step (identical weights), the chief alone writes the run, the other worker leaves nothing.

Not yet asserted: equality with one worker at the same global batch. After one epoch of the tiny
run below the two-worker losses differ from the single-worker ones (2.40 against 2.52 with plain
SGD) although the data batches and the initial weights are the same (README, Scaling out)."""

import json
import os
import re
import socket
import subprocess
import sys

from pathlib import Path

FAKE = Path(__file__).parent / "data" / "tfds_fake"
TINY = ["--dataset", f"ham10000={FAKE / 'ham10000'},brain_mri={FAKE / 'brain_tumor_mri'}", "--model", "resnet18_pair",
        "--width", "0.25", "--image_size", "32", "--batch_size", "32", "--epochs", "1", "--seed", "3",
        "--nopaper_augment", "--norandom_augment"]


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_as_one(tmp_path):
    workers = [f"localhost:{p}" for p in free_ports(2)]
    run = tmp_path / "cluster"
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                                      "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen([sys.executable, "-m", "experiments.train", *TINY, "--strategy", "multi_worker",
                                       "--output_dir", str(run)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    print(outputs[0][0][-1500:])          # the two-worker run, shown by pytest -s
    prints = [re.findall(r"weights fingerprint ([0-9a-f]{64})", out) for out, _ in outputs]
    assert prints[0] and prints[0] == prints[1]                            # both replicas hold the same weights
    assert "worker done" in outputs[1][0] and "worker done" not in outputs[0][0]
    assert (run / "metrics.json").exists() and (run / "model.keras").exists()
    assert re.search(r"worker done; the chief wrote the run to .*cluster", outputs[1][0])
