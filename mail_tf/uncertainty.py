"""Monte-Carlo uncertainty: stochastic passes of one model or an ensemble, and the measures of
DRIFA_NET_SPEC §3.3 (ours; the reference computes none of them).

Samples are probabilities of shape (S, N, K): S = members x passes stochastic predictions of N
items over K classes. Entropies are in nats.
"""

import numpy as np
from mail_tf.figures import pyplot, save_figure

EPS = 1e-12


def entropy(p, axis=-1):
    p = np.asarray(p, np.float64)
    return -np.sum(p * np.log(np.clip(p, EPS, 1.0)), axis=axis)


def summarize(samples, labels, bins=15):
    """Per-item and aggregate measures for samples (S, N, K) and integer labels (N,)."""
    samples = np.asarray(samples, np.float64)
    if samples.ndim != 3:
        raise ValueError(f"expected samples of shape (passes, items, classes), got {samples.shape}")
    labels = np.asarray(labels, np.int64)
    mean = samples.mean(0)
    predictive = entropy(mean)                      # H[p_bar]
    expected = entropy(samples).mean(0)             # E_s H[p_s]
    per_item = {"predictive_entropy": predictive, "expected_entropy": expected,
                "mutual_information": np.maximum(predictive - expected, 0.0),
                "variance": samples.var(0)}         # (N, K): spread of each class's probability
    aggregate = {"accuracy": float(np.mean(mean.argmax(1) == labels)),
                 "predictive_entropy": float(predictive.mean()), "expected_entropy": float(expected.mean()),
                 "mutual_information": float(per_item["mutual_information"].mean()),
                 "variance": samples.var(0).mean(0).tolist(),
                 "ece": expected_calibration_error(mean, labels, bins), "nll": negative_log_likelihood(mean, labels),
                 "brier": brier_score(mean, labels), "passes": int(samples.shape[0]), "count": int(len(labels))}
    return mean, per_item, aggregate


def reliability(probabilities, labels, bins=15):
    """Per equal-width confidence bin: (count, mean confidence, accuracy); empty bins count 0."""
    probabilities = np.asarray(probabilities, np.float64)
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == np.asarray(labels)
    # Bin i holds confidences in (i/bins, (i+1)/bins]; a confidence of exactly 0 falls in bin 0.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    conf = np.bincount(index, confidence, bins) / np.maximum(count, 1)
    acc = np.bincount(index, correct.astype(float), bins) / np.maximum(count, 1)
    return count, conf, acc


def expected_calibration_error(probabilities, labels, bins=15):
    """sum over bins of |bin| / N * |accuracy - confidence| (Guo et al. 2017)."""
    count, conf, acc = reliability(probabilities, labels, bins)
    return float(np.sum(count / count.sum() * np.abs(acc - conf)))


def negative_log_likelihood(probabilities, labels):
    p = np.asarray(probabilities, np.float64)[np.arange(len(labels)), np.asarray(labels, np.int64)]
    return float(-np.mean(np.log(np.clip(p, EPS, 1.0))))


def brier_score(probabilities, labels):
    """Mean over items of the squared distance between the probabilities and the one-hot label."""
    probabilities = np.asarray(probabilities, np.float64)
    onehot = np.eye(probabilities.shape[1])[np.asarray(labels, np.int64)]
    return float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))


def plot_reliability(per_task, path, bins=15):
    """One reliability diagram per task: accuracy against confidence per bin, with the diagonal.
    Returns what was drawn, read back from the figure: {task: (bins' left edges, their accuracies)}."""
    plt = pyplot()

    fig, axes = plt.subplots(1, len(per_task), figsize=(4.5 * len(per_task), 4.2), squeeze=False)
    drawn = {}
    for ax, (task, (probabilities, labels, ece)) in zip(axes[0], per_task.items()):
        count, conf, acc = reliability(probabilities, labels, bins)
        edges = np.linspace(0, 1, bins + 1)
        filled = count > 0
        bars = ax.bar(edges[:-1][filled], acc[filled], width=1 / bins, align="edge", edgecolor="black",
                      alpha=0.7, label="accuracy")
        drawn[task] = ([b.get_x() for b in bars], [b.get_height() for b in bars])
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.plot(conf[filled], acc[filled], "o", color="tab:red", markersize=3, label="bin mean confidence")
        ax.set(title=f"{task}  (ECE {ece:.3f})", xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left", fontsize=8)
    save_figure(fig, path, dpi=120)
    return drawn
