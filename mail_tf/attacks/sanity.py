"""ROBUSTNESS_EVAL.md's sanity checks of a robustness evaluation, sized to a share of its cost.

`sanity_checks(evaluate, spec, main, protocol, log)` runs them through any `evaluate(spec, protocol)`
(robust_eval's runs `robust_accuracy` on a subset); each check is {check, passed, detail}.
"""

import dataclasses

SANITY_SHARE = 0.2   # by default the sanity checks cost at most this share of the main attack
SANITY_EPS_ITERS = 10      # PGD at eps 0.5 with step 0.05: ten steps cross the whole ball


def attack_cost(spec, protocol="paper"):
    """Forward+backward passes per image of `spec` (a Square query counted as a third of one)."""
    per = {"square": spec.queries / 3}
    return spec.restarts * sum(per.get(name, spec.iters) for name in spec.components(protocol))


def sanity_base(spec):
    """The white-box attack the checks run: the main one, or PGD for Square, transfer and autoattack-lite."""
    gradient = spec.name not in ("square", "transfer", "autoattack-lite")
    return dataclasses.replace(spec, name=spec.name if gradient else "pgd", iters=max(spec.iters if gradient else 10, 10),
                               restarts=1)


def sanity_samples(spec, count, square=False):
    """Images per task whose sanity checks cost at most SANITY_SHARE of attacking `count` images."""
    base = sanity_base(spec)
    cost = SANITY_EPS_ITERS + 3 * base.iters + (spec.queries / 3 if square else 0)
    return max(1, min(count, int(SANITY_SHARE * count * attack_cost(spec) / cost)))


def sanity_checks(evaluate, spec, main, protocol, log, square=False):
    """ROBUSTNESS_EVAL.md's checks on a subset; returns [{check, passed, detail}]. `main` is the main
    attack's result (the loss check reads it); `evaluate(spec, protocol)` runs on the subset."""
    checks = []
    tasks = list(main)
    # 1. The attack raises its loss (on the main run: no extra cost); at eps = 0 it cannot move it.
    losses = {t: [round(main[t]["loss_clean"], 4), round(main[t]["loss_adversarial"], 4)] for t in tasks}
    if spec.eps > 0:
        checks.append({"check": "the attack increases the loss", "detail": losses,
                       "passed": all(main[t]["loss_adversarial"] > main[t]["loss_clean"] for t in tasks)})
    else:
        checks.append({"check": "at eps = 0 the attack leaves the loss unchanged", "detail": losses,
                       "passed": all(abs(main[t]["loss_adversarial"] - main[t]["loss_clean"]) <= 1e-4 for t in tasks)})
    base = sanity_base(spec)
    # 2. A huge eps leaves (almost) nothing.
    big = evaluate(dataclasses.replace(base, name="pgd", eps=0.5, step=0.05, iters=SANITY_EPS_ITERS), protocol)
    worst = max(big[t]["robust_accuracy"] for t in tasks)
    checks.append({"check": "robust accuracy falls to ~0 at eps = 0.5", "passed": worst <= 0.05,
                   "detail": {t: big[t]["robust_accuracy"] for t in tasks}})
    # 3. More iterations do not help the defender.
    few, many = evaluate(base, protocol), evaluate(dataclasses.replace(base, iters=2 * base.iters), protocol)
    checks.append({"check": f"{2 * base.iters} iterations are at least as strong as {base.iters}",
                   "passed": all(many[t]["robust_accuracy"] <= few[t]["robust_accuracy"] + 0.02 for t in tasks),
                   "detail": {t: [few[t]["robust_accuracy"], many[t]["robust_accuracy"]] for t in tasks}})
    # 4. Gradient-free Square must not beat the white-box attack (else gradients are masked).
    if square:
        square = evaluate(dataclasses.replace(base, name="square"), protocol)
        checks.append({"check": "Square (gradient-free) does not beat the white-box attack",
                       "passed": all(square[t]["robust_accuracy"] >= few[t]["robust_accuracy"] - 0.02 for t in tasks),
                       "detail": {t: {"square": square[t]["robust_accuracy"], base.name: few[t]["robust_accuracy"]}
                                  for t in tasks}})
    for c in checks:
        log(f"  sanity: {'ok  ' if c['passed'] else 'FAIL'} {c['check']}: {c['detail']}")
        if not c["passed"]:
            log(f"WARNING: sanity check failed: {c['check']} -- treat the robust accuracy above with suspicion "
                f"(ROBUSTNESS_EVAL.md)" + ("; the TMTL objective can spare one task, try --loss task"
                                          if spec.loss == "tmtl" else ""))
    return checks
