import json
import subprocess
import sys

from conftest import assert_refused, cli

KEYS = {"model", "params", "gflops", "train_pairs_per_s", "predict_pairs_per_s"}


def test_benchmark_cli_writes_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.benchmark", "--models", "mail_rn18",
         "--image-size", "32", "--batch-size", "2", "--width", "0.25", "--warmup", "1", "--steps", "1",
         "--repeats", "2", "--baseline", "mail_rn18", "--adv_iters", "1", "--attack_pairs", "2", "--json", str(out),
         "--inter_op_threads", "2", "--intra_op_threads", "1"],
        capture_output=True, text=True, check=True)
    results = json.loads(out.read_text())
    assert [r["model"] for r in results] == ["mail_rn18"]
    r = results[0]
    assert KEYS <= set(r)
    assert r["params"] > 0 and r["gflops"] > 0 and r["train_pairs_per_s"] > 0 and r["predict_pairs_per_s"] > 0
    assert (r["image_size"], r["batch_size"]) == (32, 2)
    assert "train pairs/s" in proc.stdout and "mail_rn18" in proc.stdout
    assert len(r["train_pairs_per_s_repeats"]) == 2 and r["jit_compile"] is False
    assert r["threads"] == {"inter_op": 2, "intra_op": 1}
    assert sorted(r["train_pairs_per_s_repeats"])[0] <= r["train_pairs_per_s"] <= sorted(r["train_pairs_per_s_repeats"])[1]
    assert r["train_ratio"] == 1.0 and r["baseline"] == "mail_rn18"         # the baseline against itself
    assert r["gmacs"] * 2 < r["gflops"] < r["gflops_grouped_as_dense"]     # bias adds; MAIL's grouped convs
    assert "train 1.00x" in proc.stdout
    # Algorithm 2's and PGD-10's speed, as ratios too (the baseline against itself: 1).
    assert r["adv_train_ratio"] == 1.0 and r["attack_ratio"] == 1.0 and r["pgd10_seconds"] > 0
    assert "Algorithm 2 1.00x  PGD-10 1.00x" in proc.stdout


def test_benchmark_cli_rejects_unknown_model():
    proc = cli("experiments.benchmark", "--models", "mail_rn34")
    assert_refused(proc, "unknown ['mail_rn34']")
    assert "unknown ['mail_rn34']" in proc.stderr.strip().splitlines()[-1] and "USAGE" not in proc.stderr


def test_paired_ratios_follow_each_repeat_and_the_ratio_of_medians_stays():
    """A machine that slows down between repeats moves both models alike: the per-repeat ratios stay
    put where the ratio of the medians, taken from different repeats, does not. (In a process of its
    own: importing an entry point defines its absl flags, which another test file's entry point may
    define again.)"""
    script = """
import json
from experiments.benchmark import add_ratios, format_ratios
base = [100.0, 50.0, 80.0]                          # the machine's speed drifts between repeats
results = [{"model": m, "image_size": 32, "batch_size": 32,
            **{f"{k}_pairs_per_s_repeats": [v * f for v in base] for k in ("train", "predict")}}
           for m, f in (("pair", 1.0), ("mail", 1.25))]
results[1]["train_pairs_per_s_repeats"][1] = 70.0   # one repeat of MAIL's at 1.4x
for r in results:
    for k in ("train", "predict"):
        r[f"{k}_pairs_per_s"] = sorted(r[f"{k}_pairs_per_s_repeats"])[1]
add_ratios(results, "pair")
print(json.dumps({"results": results, "text": format_ratios(results)}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                    check=True).stdout.strip().splitlines()[-1])
    pair, mail = out["results"]
    assert mail["train_ratio_repeats"] == [1.25, 1.4, 1.25] and mail["train_ratio_paired"] == 1.25
    assert mail["train_ratio"] == 100.0 / 80.0 and mail["predict_ratio_paired"] == 1.25
    assert pair["train_ratio_paired"] == 1.0
    assert "train 1.25x (per repeat 1.25-1.40x, median 1.25x)" in out["text"]
