"""Robust accuracy of a trained model under l-inf attacks, per task and protocol, with sanity checks.

  python -m experiments.robust_eval --run runs/medmnist-robust_mail --attack pgd
  python -m experiments.robust_eval --run RUN --attack autoattack-lite --num_samples 200 --out r.json
  python -m experiments.robust_eval --run RUN --attack transfer --surrogate runs/other
  python -m experiments.robust_eval --run RUN --eps_sweep --iters_sweep --protocol paper

--run is a run directory of experiments.train (model.keras, config.json, splits.json); its
experiment, image size and splits are reused. Protocols (ROBUSTNESS_EVAL.md): `paper` (one draw
while crafting, a fresh one to classify) and `adaptive` (EOT over --eot draws per step,
straight-through clips, accuracy as the mean over --draws classification draws and by majority
vote); `both` (default) reports them side by side — for a model with no randomness at inference
(no RPF, MAN or MC dropout) they are the same numbers, computed once. Attacks: fgsm, bim, pgd, mim,
apgd-ce, apgd-dlr, square, autoattack-lite (APGD-CE + APGD-DLR + Square: not the standard AutoAttack,
which adds APGD-T and FAB-T; `autoattack` is its old spelling; under the adaptive protocol APGD with
EOT), transfer (PGD crafted on --surrogate, classified by --run). The objective (--loss) is the
scored task's own loss by default; `tmtl`, every head's summed loss, is the paper's protocol.
Writes a table to stdout, --out (JSON), and a markdown report (and sweep plot) beside the JSON.
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from experiments.cli import (THREADS, check_ranges, define_shared, no_arguments, number_list, refusing,  # noqa: E402
                             with_threads)
from mail_tf.attacks.sanity import SANITY_SHARE, sanity_checks, sanity_samples  # noqa: E402

ATTACK_NAMES = ["fgsm", "bim", "pgd", "mim", "apgd-ce", "apgd-dlr", "square", "autoattack-lite", "transfer",
                "autoattack"]   # the old spelling of autoattack-lite
EPS_SWEEP = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1]
ITERS_SWEEP = [10, 20, 50, 100]

FLAGS = flags.FLAGS
define_shared(__name__, run=None, dataset=(None, "Named experiment (default: the run's)."),
              data_dir=(None, "Folder holding the datasets (default: the run's)."),
              seed=(0, "Seed of random starts, draws and Square."), batch_size=(64, "Image pairs per attack batch."),
              out=(None, "Write the results to this JSON file (and a .md report beside it)."),
              split=("test", "Split to attack."), eps=4 / 255,
              iters=(None, "Attack iterations (default 10; APGD and autoattack-lite 100)."),
              num_samples=(None, "Attack at most this many images per task (default: all)."), **THREADS)
flags.DEFINE_enum("attack", "pgd", ATTACK_NAMES, "Attack.")
flags.DEFINE_enum("protocol", "both", ["paper", "adaptive", "both"], "Evaluation protocol.")
flags.DEFINE_float("step", None, "Step size of FGSM/BIM/PGD/MIM (default eps / 4; fgsm: eps).")
flags.DEFINE_enum("loss", "task", ["task", "tmtl"], "Objective: the loss of the task being scored (default), or "
                  "tmtl: the summed loss of every head (the paper's protocol; it can spare one task).")
flags.DEFINE_integer("restarts", 1, "Random restarts; a sample is robust only if it survives all.")
flags.DEFINE_integer("queries", 1000, "Square's query budget per image.")
flags.DEFINE_integer("eot", 20, "Adaptive protocol: draws averaged per gradient step (EOT).")
flags.DEFINE_integer("draws", 10, "Adaptive protocol: classification draws per image.")
flags.DEFINE_string("surrogate", None, "Run directory of the surrogate model (transfer attack).")
flags.DEFINE_string("modality", None, "Attack only this task's image (default: every modality jointly).")
flags.DEFINE_bool("eps_sweep", False, "Also sweep eps over 0.01 ... 0.1 with the attack (paper Fig. 6).")
flags.DEFINE_bool("iters_sweep", False, "Also sweep the iterations over 10, 20, 50, 100 (paper Fig. 6).")
flags.DEFINE_list("sweep_eps", [str(e) for e in EPS_SWEEP], "The eps values of --eps_sweep.")
flags.DEFINE_list("sweep_iters", [str(k) for k in ITERS_SWEEP], "The iteration counts of --iters_sweep.")
flags.DEFINE_bool("sanity", True, "Run the sanity checks of ROBUSTNESS_EVAL.md on a subset.")
flags.DEFINE_integer("sanity_samples", None, "Images per task for the sanity checks (default: as many as cost "
                     f"at most {SANITY_SHARE:.0%} of the main attack).")
flags.DEFINE_bool("sanity_square", False, "Also check that Square does not beat the white-box attack (slow).")
# Spellings before --run / --out (a preset name is --model elsewhere), and dashed forms.
flags.DEFINE_alias("model", "run")
flags.DEFINE_alias("json", "out")
flags.DEFINE_alias("eps-sweep", "eps_sweep")
flags.DEFINE_alias("iters-sweep", "iters_sweep")
flags.DEFINE_alias("num-samples", "num_samples")


def attack_label(spec):
    budget = f"{spec.queries} queries" if spec.name == "square" else f"{spec.iters} iterations"
    return (f"{spec.name}, eps {spec.eps:.4f} ({spec.eps * 255:.1f}/255), {budget}, {spec.restarts} restart(s), "
            f"{'TMTL loss' if spec.loss == 'tmtl' else 'loss of the scored task'}")


def result_rows(protocols):
    """(protocol, task, n, clean, robust, majority vote as text or '') per protocol and task."""
    for protocol, per_task in protocols.items():
        for task, r in per_task.items():
            vote = r.get("robust_majority_accuracy")
            yield (protocol, task, r["count"], r["clean_accuracy"], r["robust_accuracy"],
                   "" if vote is None else f"{vote:.4f}")


def format_table(protocols):
    lines = [f"{'protocol':9} {'task':18} {'n':>6} {'clean':>7} {'robust':>7} {'robust (vote)':>14}"]
    lines += [f"{protocol:9} {task:18} {n:6d} {clean:7.4f} {robust:7.4f} {vote:>14}"
              for protocol, task, n, clean, robust, vote in result_rows(protocols)]
    return "\n".join(lines)


def check_flags():
    """Every numeric flag in range, before anything loads: one line naming the flag and the range."""
    check_ranges(FLAGS, {"iters": (1, None), "num_samples": (1, None), "batch_size": (1, None), "eps": (0.0, 1.0),
                         "restarts": (1, None), "queries": (1, None), "eot": (1, None), "draws": (1, None),
                         "sanity_samples": (1, None), "seed": (0, None)})
    if FLAGS.step is not None and not FLAGS.step > 0:
        raise ValueError(f"--step={FLAGS.step}: expected a positive step size")


def markdown_report(results):
    lines = [f"# Robustness of `{results['model']}` ({results['model_name']})", "",
             f"- data: {results['dataset']}, split {results['split']}, image size {results['image_size']}",
             f"- attack: {results['attack']['label']}; perturbed: {results['perturbed']}",
             f"- randomised model: {results['randomized']}; adaptive protocol: EOT {results['eot']}, "
             f"{results['draws']} classification draws", f"- seed {results['seed']}"]
    if "note" in results:
        lines.append(f"- {results['note']}")
    lines += ["",
             "| protocol | task | n | clean | robust | robust (majority vote) |", "|---|---|---|---|---|---|"]
    lines += [f"| {protocol} | {task} | {n} | {clean:.4f} | {robust:.4f} | {vote} |"
              for protocol, task, n, clean, robust, vote in result_rows(results["protocols"])]
    for protocol, checks in results.get("sanity", {}).items():
        lines += ["", f"## Sanity checks ({protocol} protocol)", ""]
        lines += [f"- {'ok' if c['passed'] else '**FAILED**'}: {c['check']} — `{c['detail']}`" for c in checks]
    for name, sweep in results.get("sweeps", {}).items():
        lines += ["", f"## {name} sweep", ""]
        for protocol, points in sweep.items():
            for p in points:
                accs = ", ".join(f"{t} {r['robust_accuracy']:.4f}" for t, r in p["results"].items())
                lines.append(f"- {protocol}, {name} = {p['value']}: {accs}")
    return "\n".join(lines) + "\n"


def settings():
    """(AttackSpec, sweep eps values, sweep iteration counts) from the flags, all checked before
    anything loads; ValueError names the first bad flag."""
    from mail_tf.attacks.evaluate import AttackSpec

    check_flags()
    iters = FLAGS.iters or (100 if FLAGS.attack.startswith(("apgd", "autoattack")) else 10)
    spec = AttackSpec(FLAGS.attack, FLAGS.eps, FLAGS.step, iters, FLAGS.restarts, FLAGS.queries, FLAGS.loss)
    sweep_eps = number_list("--sweep_eps", FLAGS.sweep_eps, float, lambda e: e >= 0, "numbers >= 0")
    sweep_iters = number_list("--sweep_iters", FLAGS.sweep_iters, int, lambda k: k >= 1, "integers >= 1")
    if FLAGS.attack == "transfer" and not FLAGS.surrogate:
        raise ValueError("--attack transfer needs --surrogate RUN_DIR (the model the examples are crafted on)")
    return spec, sweep_eps, sweep_iters


def load():
    """(model, its config, the surrogate or None, the modalities, the perturbed modality indices or
    None for all); FileNotFoundError / ValueError / DataError name what is wrong."""
    from mail_tf.training.run_dir import RunDir

    run = RunDir(FLAGS.run)
    model, config = run.load_model(), run.config
    surrogate = RunDir(FLAGS.surrogate, "--surrogate").load_model() if FLAGS.surrogate else None
    modalities = run.load_data(FLAGS.dataset, FLAGS.data_dir)
    tasks = [m.task for m in modalities]
    if FLAGS.modality is not None and FLAGS.modality not in tasks:
        raise ValueError(f"--modality={FLAGS.modality!r}: expected one of the tasks {tasks}")
    if surrogate is not None and [i.shape[1:] for i in surrogate.inputs] != [i.shape[1:] for i in model.inputs]:
        raise ValueError(f"--surrogate {FLAGS.surrogate} takes inputs {[i.shape[1:] for i in surrogate.inputs]}, "
                         f"the model {[i.shape[1:] for i in model.inputs]}; train it on the same experiment and size")
    perturb = None if FLAGS.modality is None else [tasks.index(FLAGS.modality)]
    return model, config, surrogate, modalities, perturb


class Evaluation:
    """The attacks on one model under the requested protocols. Compiled evaluators are shared by the
    main attack, the sanity checks and the sweeps (one trace each). A deterministic model is attacked
    under the first protocol only; the others report its numbers (`per_protocol`)."""

    def __init__(self, model, datasets, surrogate, perturb, log):
        import keras

        from mail_tf.attacks.evaluate import is_randomized

        self.model, self.datasets, self.surrogate, self.perturb, self.log = model, datasets, surrogate, perturb, log
        self.protocols = ["paper", "adaptive"] if FLAGS.protocol == "both" else [FLAGS.protocol]
        self.randomized = is_randomized(model)
        self.computed = self.protocols if self.randomized else self.protocols[:1]
        self.compiled = {}
        # Seeded once: re-seeding before every evaluation changes TensorFlow's global seed, which makes
        # every compiled attack trace again (70-80 s each for MAIL-RN18: sanity checks on 3 images took
        # longer than the main attack on 64). Random starts take --seed explicitly; Robust-MAIL's draws
        # follow from this one seed, so a run is still reproducible.
        keras.utils.set_random_seed(FLAGS.seed)

    def __call__(self, spec, protocol, limit=None, quiet=False):
        from mail_tf.attacks.evaluate import robust_accuracy

        return robust_accuracy(self.model, self.datasets, spec, protocol, FLAGS.eot, FLAGS.draws, FLAGS.seed,
                               limit or FLAGS.num_samples, self.surrogate, self.perturb,
                               log=None if quiet else self.log, cache=self.compiled)

    def per_protocol(self, fn):
        """{protocol: fn(protocol)} over the computed protocols, the rest sharing the first's value."""
        out = {p: fn(p) for p in self.computed}
        return {p: out.get(p, out[self.computed[0]]) for p in self.protocols}


def attack(evaluation, spec):
    """The main attack: ({protocol: results}, {protocol: seconds})."""
    seconds = {}

    def run(protocol):
        start = time.time()
        evaluation.log(f"{protocol} protocol: {attack_label(spec)} ...")
        out = evaluation(spec, protocol)
        seconds[protocol] = time.time() - start
        evaluation.log(f"  {seconds[protocol]:.0f} s")
        return out

    results = evaluation.per_protocol(run)
    return results, {p: seconds.get(p, 0.0) for p in evaluation.protocols}


def sanity(evaluation, spec, main_results, seconds):
    """ROBUSTNESS_EVAL.md's checks per protocol, on a subset sized to a share of the main attack."""
    def run(protocol):
        main_result = main_results[protocol]
        n = FLAGS.sanity_samples or sanity_samples(spec, min(r["count"] for r in main_result.values()),
                                                   FLAGS.sanity_square)
        evaluation.log(f"sanity checks ({protocol} protocol, {n} images per task) ...")
        start = time.time()
        subset = lambda s, p: evaluation(s, p, limit=n, quiet=True)
        checks = sanity_checks(subset, spec, main_result, protocol, evaluation.log, FLAGS.sanity_square)
        seconds[f"sanity_{protocol}"] = time.time() - start
        return checks

    return evaluation.per_protocol(run)


def sweep(evaluation, spec, name, field, values):
    """{protocol: [{value, results}]}, one progress line per point (a sweep runs for minutes)."""
    import dataclasses

    def run(protocol):
        points = []
        for v in values:
            start = time.time()
            point = evaluation(dataclasses.replace(spec, **{field: v}), protocol, quiet=True)
            points.append({"value": v, "results": point})
            accs = ", ".join(f"{t} {r['robust_accuracy']:.3f}" for t, r in point.items())
            evaluation.log(f"{name} sweep ({protocol}) {v}: robust accuracy {accs} ({time.time() - start:.0f} s)")
        return points

    return evaluation.per_protocol(run)


def write(results, out):
    """The JSON report, its markdown beside it, and the sweep plot if there are sweeps."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown_report(results))
    written = [out, out.with_suffix(".md")]
    if results.get("sweeps"):
        from mail_tf.attacks.report import plot_sweeps

        plot_sweeps(results["sweeps"], out.with_suffix(".png"))
        written.append(out.with_suffix(".png"))
    return written


def main(argv):
    import dataclasses

    logging.set_verbosity(logging.WARNING)
    no_arguments(argv)
    if not FLAGS.run:
        sys.exit("error: --run is required (a run directory of experiments.train)")
    from mail_tf import data as mdata

    with refusing():
        spec, sweep_eps, sweep_iters = settings()
    if FLAGS.attack == "autoattack":
        print("note: --attack autoattack is now called autoattack-lite (APGD-CE + APGD-DLR + Square)", flush=True)
    with refusing(FileNotFoundError, mdata.DataError):
        model, config, surrogate, modalities, perturb = load()
    log = lambda msg: print(msg, flush=True)
    datasets = mdata.eval_datasets(modalities, FLAGS.split, FLAGS.batch_size, config.seed, all_labels=True)
    evaluation = Evaluation(model, datasets, surrogate, perturb, log)
    if len(evaluation.computed) < len(evaluation.protocols):
        log("a deterministic model (no RPF, MAN or MC dropout): the adaptive protocol gives the paper "
            "protocol's numbers, computed once")
    results = {"model": str(FLAGS.run), "model_name": config.model, "randomized": evaluation.randomized,
               "dataset": FLAGS.dataset or config.dataset, "split": FLAGS.split, "image_size": config.image_size,
               "attack": {**dataclasses.asdict(spec), "label": attack_label(spec)},
               "perturbed": FLAGS.modality or "all modalities jointly", "surrogate": FLAGS.surrogate,
               "eot": FLAGS.eot, "draws": FLAGS.draws, "seed": FLAGS.seed}
    results["protocols"], results["seconds"] = attack(evaluation, spec)
    if FLAGS.sanity:
        results["sanity"] = sanity(evaluation, spec, results["protocols"], results["seconds"])
    if len(evaluation.computed) < len(evaluation.protocols):
        results["note"] = "deterministic model: the adaptive protocol's numbers are the paper protocol's (computed once)"
    sweeps = {}
    if FLAGS.eps_sweep:
        sweeps["eps"] = sweep(evaluation, spec, "eps", "eps", sweep_eps)
    if FLAGS.iters_sweep:
        sweeps["iterations"] = sweep(evaluation, spec, "iterations", "iters", sweep_iters)
    if sweeps:
        results["sweeps"] = sweeps
    print(format_table(results["protocols"]))
    if FLAGS.out:
        log("written " + " and ".join(map(str, write(results, FLAGS.out))))


if __name__ == "__main__":
    app.run(with_threads(main))
