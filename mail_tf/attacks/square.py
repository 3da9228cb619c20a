"""Square attack, l-inf (Andriushchenko et al., ECCV 2020): gradient-free random search.

Starts from vertical stripes of +-eps and proposes, per query, a random square window per
perturbed modality whose entries become +-eps (one sign per channel); a proposal is kept for a
sample when it lowers the sample's loss. The square's area shrinks on the original schedule
(p_init = 0.8 for l-inf, as AutoAttack uses). The loss is the sum over tasks of the positive part
of the logit margin z_y - max_{i != y} z_i, so a sample is done when every task is fooled and a
fooled task no longer pulls. It needs only forward passes: a masked gradient cannot stop it, which
is why it is the gradient-masking check of ROBUSTNESS_EVAL.md.
"""

import numpy as np
import tensorflow as tf

from mail_tf.attacks.gradient import logit_margin


def margin_loss(labels, logits):
    """sum_t max(z_y - max_{i != y} z_i, 0) per sample (0: every task misclassified)."""
    return tf.add_n([tf.nn.relu(logit_margin(y, logits[t])) for t, y in labels.items()])


def square_fraction(p_init, query, queries):
    """Fraction of the image the square covers at `query` (the original schedule, rescaled to 10k)."""
    i = int(query / queries * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
                       (8000, 256)):
        if i <= bound:
            return p_init / div
    return p_init / 512


def _propose(rng, clean, current, side, eps, tries=100):
    """`current` with one random side x side window set to clean +- eps (a sign per channel), drawn
    again while the window would leave `current` unchanged (as the original does: such a query is
    wasted); after `tries` draws the last one is kept."""
    h, w, c = clean.shape
    for _ in range(tries):
        r, s = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        window = np.clip(clean[r:r + side, s:s + side] + eps * rng.choice([-1.0, 1.0], size=(1, 1, c)), 0, 1)
        if np.abs(window - current[r:r + side, s:s + side]).max() >= 1e-7:
            break
    out = current.copy()
    out[r:r + side, s:s + side] = window
    return out


def square_attack(loss_fn, images, eps, queries=1000, p_init=0.8, seed=0, perturb=None, log_every=0, log=None):
    """Minimise loss_fn(list of images) -> (batch,) losses (>= 0, 0 = fooled) with `queries` forward
    passes; returns (adversarial images as numpy arrays, queries used)."""
    rng = np.random.default_rng(seed)
    x = [np.asarray(v, np.float32) for v in images]
    chosen = list(range(len(x)) if perturb is None else perturb)
    adv = [v.copy() for v in x]
    for i in chosen:
        b, _, w, c = x[i].shape
        adv[i] = np.clip(x[i] + eps * rng.choice([-1.0, 1.0], size=(b, 1, w, c)), 0, 1).astype(np.float32)
    best = np.asarray(loss_fn(adv))
    used = 1
    for q in range(1, queries):
        active = np.flatnonzero(best > 0)
        if active.size == 0:
            break
        proposal = [v.copy() for v in adv]
        for i in chosen:
            _, h, w, c = x[i].shape
            side = int(np.clip(round(np.sqrt(square_fraction(p_init, q, queries) * h * w)), 1, min(h, w) - 1))
            for n in active:
                proposal[i][n] = _propose(rng, x[i][n], adv[i][n], side, eps)
        loss = np.asarray(loss_fn(proposal))
        used += 1
        better = (loss < best) & (best > 0)
        for i in chosen:
            adv[i][better] = proposal[i][better]
        best = np.where(better, loss, best)
        if log and log_every and q % log_every == 0:
            log(f"    square: query {q}/{queries}, {int((best > 0).sum())} of {best.size} not yet fooled")
    return adv, used
