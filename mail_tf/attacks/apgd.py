"""APGD (Croce & Hein, ICML 2020): step-size-free l-inf PGD with momentum, per sample.

Each sample has its own step size, starting at 2*eps and halved at checkpoints when the loss rose
in fewer than rho of the steps since the last checkpoint, or when neither the step size was halved
nor the best loss improved at the last checkpoint; on halving the iterate restarts from the best
point found. The loss is per sample (CE or DLR on logits, summed over tasks for a multi-task
model); every modality moves in its own eps-ball with one shared step size per sample. The loop
is a `tf.while_loop` (one trace for any number of iterations). With a loss function that also
returns `fooled` (`mail_tf.attacks.gradient`), an iterate that fooled the model is returned in place
of the highest-loss one, which may still be classified correctly (AutoAttack's rule).
"""

import tensorflow as tf

from mail_tf.attacks.gradient import fooling_or, keep_fooling, losses_and_gradients, project, uniform_start


def checkpoint_steps(iters):
    """The iterations after which APGD checks its step size, with the reference code's integer
    arithmetic for every budget: the first after max(floor(0.22 n), 1) steps, each window then
    max(floor(0.03 n), 1) shorter, down to max(floor(0.06 n), 1) (n = 100: 22, 41, 57, ..., 99;
    n = 10: 2, 3, 4, ..., 10)."""
    first, shrink, least = (max(int(f * iters), 1) for f in (0.22, 0.03, 0.06))
    steps, window = [], first
    at = first
    while at <= iters:
        steps.append(at)
        window = max(window - shrink, least)
        at += window
    return steps


def checkpoint_table(iters):
    """(is_check, window) over iterations 0..iters as tensors (iters may be a tensor, so one trace
    serves every budget): whether a checkpoint falls after that many steps, and the length of the
    window it closes (1 elsewhere); the same schedule as `checkpoint_steps`."""
    n = tf.cast(iters, tf.int32)
    size = lambda f: tf.maximum(tf.cast(tf.floor(f * tf.cast(n, tf.float64)), tf.int32), 1)
    first, shrink, least = size(0.22), size(0.03), size(0.06)

    def body(at, length, is_check, window):
        is_check = tf.tensor_scatter_nd_update(is_check, [[at]], [True])
        window = tf.tensor_scatter_nd_update(window, [[at]], [length])
        next_length = tf.maximum(length - shrink, least)
        return at + next_length, next_length, is_check, window

    _, _, is_check, window = tf.while_loop(
        lambda at, *_: at <= n, body, (first, first, tf.zeros([n + 1], tf.bool), tf.ones([n + 1], tf.int32)))
    return is_check, window


def apgd(loss_fn, images, eps, iters=100, rho=0.75, alpha=0.75, seed=(0, 0), random_start=True, perturb=None):
    """Maximise loss_fn(list of images) -> (batch,) per-sample losses; returns the best points found.

    images: list of clean batches in [0, 1]; perturb: indices of the modalities to attack (all).
    """
    run = _APGD(loss_fn, images, eps, iters, rho, alpha, perturb)
    (state,) = tf.while_loop(lambda s: s["k"] < tf.cast(iters, tf.int32), lambda s: (run.iteration(s),),
                             (run.start(seed, random_start),))
    return fooling_or(state["found"], state["fooled_any"], state["x_best"])


def _expand(v, x):
    """(B,) -> broadcastable to x."""
    return tf.reshape(v, [-1] + [1] * (len(x.shape) - 1))


class _APGD:
    """One APGD run: its constants, and its steps on the while-loop's state (a dict, see `start`)."""

    def __init__(self, loss_fn, images, eps, iters, rho, alpha, perturb):
        self.loss_fn = loss_fn
        self.images = [tf.convert_to_tensor(x) for x in images]
        self.chosen = set(range(len(self.images)) if perturb is None else perturb)
        self.dtype = self.images[0].dtype
        self.eps = tf.cast(eps, self.dtype)
        self.rho, self.alpha = rho, alpha
        self.is_check, window = checkpoint_table(iters)
        self.window = tf.cast(window, self.dtype)

    def evaluate(self, xs):
        """Per-sample losses, their gradients (zero for the modalities not attacked) and `fooled`."""
        loss, fooled, grads = losses_and_gradients(self.loss_fn, xs, self.chosen)
        return loss, [tf.zeros_like(x) if g is None else g for x, g in zip(xs, grads)], fooled

    def start(self, seed, random_start):
        """The state at the (random) start: the iterate and the one before it, their gradient and
        loss, the per-sample step 2 eps, the best point so far, the checkpoint counters, the fooling
        iterate found."""
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
        batch = tf.shape(self.images[0])[0]
        x0 = [uniform_start(x, i, seed, self.eps) if i in self.chosen and random_start else x
              for i, x in enumerate(self.images)]
        loss0, grad0, fooled0 = self.evaluate(x0)
        found, fooled_any = keep_fooling(list(x0), tf.zeros([batch], tf.bool), x0, fooled0)
        # reduced_last starts True (as the reference's): the first checkpoint halves only on oscillation.
        return dict(k=tf.constant(0), x=x0, x_old=x0, grad=grad0, loss=loss0, step=tf.fill([batch], 2.0) * self.eps,
                    x_best=x0, grad_best=grad0, loss_best=loss0, rises=tf.zeros([batch], self.dtype),
                    reduced_last=tf.ones([batch], tf.bool), best_last=loss0, found=found, fooled_any=fooled_any)

    def move(self, s, a):
        """The momentum step from s["x"]: z, a sign step of the sample's size, then x + a (z - x) +
        (1 - a)(x - x_old), each projected to the modality's eps-ball."""
        out = []
        for i, (x, xc, xo, g) in enumerate(zip(self.images, s["x"], s["x_old"], s["grad"])):
            if i not in self.chosen:
                out.append(xc)
                continue
            z = project(xc + _expand(s["step"], xc) * tf.sign(g), x, self.eps)
            out.append(project(xc + a * (z - xc) + (1 - a) * (xc - xo), x, self.eps))
        return out

    def iteration(self, s):
        """One step: move, evaluate, remember the best and the fooling points, then the checkpoint."""
        k = s["k"]
        a = tf.where(k == 0, tf.constant(1.0, self.dtype), tf.constant(self.alpha, self.dtype))
        x_new = self.move(s, a)
        loss_new, grad_new, fooled = self.evaluate(x_new)
        found, fooled_any = keep_fooling(s["found"], s["fooled_any"], x_new, fooled)
        better = loss_new > s["loss_best"]
        pick = lambda new, old: [tf.where(_expand(better, o), n, o) for o, n in zip(old, new)]
        best = dict(x_best=pick(x_new, s["x_best"]), grad_best=pick(grad_new, s["grad_best"]),
                    loss_best=tf.where(better, loss_new, s["loss_best"]))
        moved = dict(step=s["step"], x=x_new, grad=grad_new, loss=loss_new,
                     rises=s["rises"] + tf.cast(loss_new > s["loss"], self.dtype),
                     reduced_last=s["reduced_last"], best_last=s["best_last"])
        moved = tf.cond(self.is_check[k + 1], lambda: self.checkpoint(k, moved, best), lambda: moved)
        return dict(k=k + 1, x_old=s["x"], found=found, fooled_any=fooled_any, **best, **moved)

    def checkpoint(self, k, moved, best):
        """Halve the step of the samples whose loss rose in at most rho of the window's steps (the
        reference's oscillation test) or that neither halved nor improved at the last checkpoint,
        and restart those from their best point."""
        oscillating = moved["rises"] <= self.rho * self.window[k + 1]
        stalled = tf.logical_and(tf.logical_not(moved["reduced_last"]), moved["best_last"] >= best["loss_best"])
        halve = tf.logical_or(oscillating, stalled)
        back = lambda kept, new: [tf.where(_expand(halve, b), b, n) for b, n in zip(kept, new)]
        return dict(step=tf.where(halve, moved["step"] / 2, moved["step"]), x=back(best["x_best"], moved["x"]),
                    grad=back(best["grad_best"], moved["grad"]), loss=tf.where(halve, best["loss_best"], moved["loss"]),
                    rises=tf.zeros_like(moved["rises"]), reduced_last=halve, best_last=best["loss_best"])
