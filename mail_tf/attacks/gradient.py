"""Sign-gradient l-inf attacks on multi-input models: FGSM, BIM, PGD and MIM as one loop.

Every modality is perturbed in its own l-inf ball of radius eps around its clean image (or only the
modalities in `perturb`), and every adversarial image stays in [0, 1]. The attacks take a loss
function of the list of images (a scalar to maximise), so the same code serves the TMTL loss over
all heads, one task's loss, EOT averages and logit margins. The loop is a `tf.range` loop: inside a
`tf.function` it becomes one `tf.while_loop`, traced once whatever the number of iterations.

A loss function may also return (losses, fooled), fooled a per-sample bool (`tmtl_objective(...,
track_fooled=True)`): then a sample counts as broken if *any* iterate fooled the model (AutoAttack's
rule), and the attack returns that iterate instead of the last one, which may be classified
correctly again.
"""

import dataclasses

import tensorflow as tf

from mail_tf.layers.replica_random import global_batch_draw

METHODS = ("fgsm", "bim", "pgd", "mim")


@dataclasses.dataclass(frozen=True)
class SignAttack:
    """Settings of an iterative sign-gradient attack.

    fgsm: one step of size eps, no random start; bim: `iters` steps, no random start; pgd: random
    uniform start in the ball, then `iters` steps; mim: BIM with momentum `decay` on the
    L1-normalised gradient (Dong et al. 2018).
    """

    method: str = "pgd"
    eps: float = 4 / 255
    step: float = None          # None: eps / 4 (the reference notebook's PGD); fgsm always uses eps
    iters: int = 10
    decay: float = 1.0          # MIM momentum
    random_start: bool = None   # None: the method's own (pgd yes, others no)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"attack method must be one of {METHODS}, got {self.method!r}")
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps!r}")
        if self.iters < 1:
            raise ValueError(f"iters must be at least 1, got {self.iters!r}")

    @property
    def step_size(self):
        if self.method == "fgsm":
            return self.eps
        return self.eps / 4 if self.step is None else self.step

    @property
    def steps(self):
        return 1 if self.method == "fgsm" else self.iters

    @property
    def starts_randomly(self):
        return self.method == "pgd" if self.random_start is None else self.random_start


def project(x_adv, x, eps):
    """Clip x_adv into the l-inf ball of radius eps around x and into [0, 1]."""
    return tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps), 0.0, 1.0)


def uniform_start(x, modality, seed, eps):
    """`x` moved to a uniform random point of its eps-ball (inside [0, 1]). The noise comes from the
    stateless `seed` offset by the modality's index, drawn for the global batch and cut to this
    replica's rows (`replica_random`), so an example starts at the same point on any number of
    replicas."""
    noise = global_batch_draw(lambda shape: tf.random.stateless_uniform(
        shape, seed + [0, 7919 * (modality + 1)], -1.0, 1.0, dtype=x.dtype), tf.shape(x))
    return project(x + eps * noise, x, eps)


def logit_margin(labels, logits):
    """Per sample z_y - max_{i != y} z_i (float32): positive while the sample is classified right."""
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    true = tf.gather(logits, labels, batch_dims=1)
    return true - tf.reduce_max(logits - 1e9 * tf.one_hot(labels, logits.shape[-1]), axis=-1)


def split_fooled(out):
    """(losses, fooled or None) of a loss function's output (see the module docstring)."""
    return out if isinstance(out, tuple) else (out, None)


def keep_fooling(found, fooled_any, xs, fooled):
    """Remember, per sample, the first of the iterates `xs` that fooled the model."""
    if fooled is None:
        return found, fooled_any
    new = tf.logical_and(fooled, tf.logical_not(fooled_any))
    found = [tf.where(tf.reshape(new, [-1] + [1] * (len(x.shape) - 1)), x, f) for f, x in zip(found, xs)]
    return found, tf.logical_or(fooled_any, fooled)


def fooling_or(found, fooled_any, xs):
    """Per sample: the remembered fooling iterate where there is one, else `xs`."""
    return [tf.where(tf.reshape(fooled_any, [-1] + [1] * (len(x.shape) - 1)), f, x) for f, x in zip(found, xs)]


def l1_normalise(grads, chosen):
    """MIM's g / ||g||_1 per sample, the norm taken over the joint input of every attacked modality
    (the modalities form one input to the model, so one norm keeps their relative scale)."""
    norms = [tf.reduce_sum(tf.abs(g), axis=tuple(range(1, len(g.shape))))
             for i, g in enumerate(grads) if i in chosen and g is not None]
    if not norms:
        return grads
    l1 = tf.maximum(tf.add_n(norms), 1e-12)
    return [g if i not in chosen or g is None else g / tf.reshape(l1, [-1] + [1] * (len(g.shape) - 1))
            for i, g in enumerate(grads)]


def losses_and_gradients(loss_fn, xs, chosen):
    """(losses, fooled, gradients) of loss_fn at the images `xs`: the losses (per sample, or a
    scalar) and `fooled` (None without it) as `split_fooled` gives them, and the gradient of the
    losses' sum with respect to each image in `chosen` (None for the others, and for an image the
    loss does not depend on)."""
    with tf.GradientTape() as tape:
        tape.watch(xs)
        losses, fooled = split_fooled(loss_fn(xs))
        total = tf.reduce_sum(losses)
    grads = tape.gradient(total, xs)
    return losses, fooled, [g if i in chosen else None for i, g in enumerate(grads)]


def sign_attack(loss_fn, images, attack, seed=(0, 0), perturb=None, budget=None):
    """Maximise the sum of loss_fn(list of images) (a scalar or per-sample losses, or (losses, fooled))
    by sign-gradient steps; returns the adversarial images (with `fooled`: an iterate that fooled the
    model wherever one did).

    budget: optional (eps, step, iters) tensors used instead of the attack's own numbers, so one
    traced function serves every point of a sweep.

    images: list of clean image batches in [0, 1] (one per modality).
    seed: a stateless seed pair for the random start (each modality offsets it). Under a strategy
    with several replicas each replica gets its rows of the global batch's start (`replica_random`).
    perturb: indices of the modalities to attack (default all); the others stay clean.
    """
    images = [tf.convert_to_tensor(x) for x in images]
    chosen = set(range(len(images)) if perturb is None else perturb)
    eps, step, steps = budget if budget is not None else (attack.eps, attack.step_size, attack.steps)
    if attack.method == "fgsm":
        step, steps = eps, 1
    eps, step = tf.cast(eps, images[0].dtype), tf.cast(step, images[0].dtype)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)

    x_adv = [uniform_start(x, i, seed, eps) if i in chosen and attack.starts_randomly else x
             for i, x in enumerate(images)]
    momentum = [tf.zeros_like(x) for x in images]
    found, fooled_any = list(x_adv), tf.zeros([tf.shape(images[0])[0]], tf.bool)
    for _ in tf.range(steps):
        _, fooled, grads = losses_and_gradients(loss_fn, x_adv, chosen)
        found, fooled_any = keep_fooling(found, fooled_any, x_adv, fooled)
        if attack.method == "mim":
            grads = l1_normalise(grads, chosen)
        new_adv, new_momentum = [], []
        for i, (x, xa, g, mom) in enumerate(zip(images, x_adv, grads, momentum)):
            if i not in chosen or g is None:
                new_adv.append(xa)
                new_momentum.append(mom)
                continue
            if attack.method == "mim":
                g = attack.decay * mom + g
            new_momentum.append(g)
            new_adv.append(project(xa + step * tf.sign(g), x, eps))
        x_adv, momentum = new_adv, new_momentum
    # The last iterate is classified by the caller; an earlier one may have fooled (nothing without `fooled`).
    return fooling_or(found, fooled_any, x_adv)


def dlr_loss(labels, logits):
    """Per-sample difference-of-logits-ratio loss (Croce & Hein 2020), to maximise:
    -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12). With fewer than 3 classes the ratio is
    constant in sign, so the denominator is 1 there (the plain margin, Carlini-Wagner's loss)."""
    logits = tf.cast(logits, tf.float32)
    if logits.shape[-1] >= 3:
        top = tf.math.top_k(logits, 3).values
        scale = top[:, 0] - top[:, 2] + 1e-12
    else:
        scale = 1.0
    return -logit_margin(labels, logits) / scale


def per_sample_loss(labels, logits, kind="ce", weights=None):
    """sum_t lambda_t * loss_t per sample, over the tasks in `labels`; kind "ce" or "dlr"."""
    tasks = list(labels)
    weights = weights or {t: 1.0 / len(tasks) for t in tasks}
    total = 0.0
    for t in tasks:
        y = tf.cast(labels[t], tf.int32)
        if kind == "ce":
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tf.cast(logits[t], tf.float32))
        else:
            loss = dlr_loss(y, logits[t])
        total += weights[t] * loss
    return total


def tmtl_objective(model, labels, loss_weights=None, training=False, kind="ce", track_fooled=False):
    """loss_fn for the attacks: per-sample TMTL loss of `model` (CE, or DLR) on every labelled task.

    track_fooled: also return, per sample, whether every labelled task is misclassified (so the
    attacks keep any iterate that broke the sample; with one labelled task, that task)."""

    def loss_fn(images):
        logits = model(images, training=training)
        loss = per_sample_loss(labels, logits, kind, loss_weights and {t: loss_weights[t] for t in labels})
        if not track_fooled:
            return loss
        wrong = [tf.not_equal(tf.argmax(logits[t], -1, output_type=tf.int32), tf.cast(labels[t], tf.int32))
                 for t in labels]
        return loss, tf.reduce_all(tf.stack(wrong), axis=0)

    return loss_fn
