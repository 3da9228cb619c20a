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

from mail_tf.attacks.gradient import fooling_or, keep_fooling, project, split_fooled, uniform_start


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
    images = [tf.convert_to_tensor(x) for x in images]
    chosen = set(range(len(images)) if perturb is None else perturb)
    dtype = images[0].dtype
    eps = tf.cast(eps, dtype)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
    batch = tf.shape(images[0])[0]
    is_check, window = checkpoint_table(iters)
    window = tf.cast(window, dtype)

    def expand(v, x):          # (B,) -> broadcastable to x
        return tf.reshape(v, [-1] + [1] * (len(x.shape) - 1))

    def value_and_grad(xs):
        with tf.GradientTape() as tape:
            tape.watch(xs)
            loss, fooled = split_fooled(loss_fn(xs))
            total = tf.reduce_sum(loss)
        grads = tape.gradient(total, xs)
        grads = [tf.zeros_like(x) if g is None or i not in chosen else g for i, (x, g) in enumerate(zip(xs, grads))]
        return loss, grads, fooled

    x0 = [uniform_start(x, i, seed, eps) if i in chosen and random_start else x for i, x in enumerate(images)]
    loss0, grad0, fooled0 = value_and_grad(x0)
    found0, fooled_any0 = keep_fooling(list(x0), tf.zeros([batch], tf.bool), x0, fooled0)
    step = tf.fill([batch], 2.0) * eps

    def move(x_cur, x_old, grad, step, a):
        out = []
        for i, (x, xc, xo, g) in enumerate(zip(images, x_cur, x_old, grad)):
            if i not in chosen:
                out.append(xc)
                continue
            z = project(xc + expand(step, xc) * tf.sign(g), x, eps)
            out.append(project(xc + a * (z - xc) + (1 - a) * (xc - xo), x, eps))
        return out

    def body(k, x_cur, x_old, grad, loss, step, x_best, grad_best, loss_best, rises, reduced_last, best_last,
             found, fooled_any):
        a = tf.where(k == 0, tf.constant(1.0, dtype), tf.constant(alpha, dtype))
        x_new = move(x_cur, x_old, grad, step, a)
        loss_new, grad_new, fooled = value_and_grad(x_new)
        found, fooled_any = keep_fooling(found, fooled_any, x_new, fooled)
        rises = rises + tf.cast(loss_new > loss, dtype)
        better = loss_new > loss_best
        x_best = [tf.where(expand(better, xb), xn, xb) for xb, xn in zip(x_best, x_new)]
        grad_best = [tf.where(expand(better, gb), gn, gb) for gb, gn in zip(grad_best, grad_new)]
        loss_best = tf.where(better, loss_new, loss_best)

        def check():
            oscillating = rises <= rho * window[k + 1]     # the reference's "at most rho of the steps rose"
            stalled = tf.logical_and(tf.logical_not(reduced_last), best_last >= loss_best)
            halve = tf.logical_or(oscillating, stalled)
            h = lambda t: expand(halve, t)
            return (tf.where(halve, step / 2, step), [tf.where(h(xb), xb, xn) for xb, xn in zip(x_best, x_new)],
                    [tf.where(h(gb), gb, gn) for gb, gn in zip(grad_best, grad_new)],
                    tf.where(halve, loss_best, loss_new), tf.zeros_like(rises), halve, loss_best)

        def carry_on():
            return step, x_new, grad_new, loss_new, rises, reduced_last, best_last

        step, x_next, grad_next, loss_next, rises, reduced_last, best_last = tf.cond(is_check[k + 1], check, carry_on)
        return (k + 1, x_next, x_cur, grad_next, loss_next, step, x_best, grad_best, loss_best, rises, reduced_last,
                best_last, found, fooled_any)

    # reduced_last starts True (as the reference's): the first checkpoint halves only on oscillation.
    state = (tf.constant(0), x0, x0, grad0, loss0, step, x0, grad0, loss0, tf.zeros([batch], dtype),
             tf.ones([batch], tf.bool), loss0, found0, fooled_any0)
    out = tf.while_loop(lambda k, *_: k < tf.cast(iters, tf.int32), body, state)
    return fooling_or(out[12], out[13], out[6])
