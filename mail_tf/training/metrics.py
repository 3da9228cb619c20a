"""Per-task classification metrics, with MedMNIST's definitions (Yang et al. 2023).

Binary tasks: accuracy thresholds the positive class's probability at 0.5 and AUC is the ROC AUC
of that probability. Multi-class: accuracy of the arg-max and AUC as the mean one-vs-rest AUC.
"""

import numpy as np
from scipy.special import log_softmax
from scipy.stats import rankdata


def roc_auc(positive, score):
    """ROC AUC via the Mann-Whitney U statistic (ties count one half); None if one class is absent."""
    positive = np.asarray(positive, bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def confusion_matrix(labels, predictions, num_classes):
    """Rows: true class, columns: predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def macro_f1(matrix):
    """Mean F1 over the classes that occur in the labels or the predictions."""
    tp = np.diag(matrix).astype(float)
    denominator = matrix.sum(0) + matrix.sum(1)       # 2TP + FP + FN
    present = denominator > 0
    return float(np.mean(2 * tp[present] / denominator[present]))


def classification_metrics(labels, probabilities, class_names=None):
    """{accuracy, macro_f1, auc, confusion_matrix, count} for integer labels and (N, K) probabilities."""
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    probabilities = np.asarray(probabilities, np.float64)
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise ValueError(f"expected probabilities of shape ({len(labels)}, classes), got {probabilities.shape}")
    k = probabilities.shape[1]
    if k == 2:
        predictions = (probabilities[:, 1] > 0.5).astype(np.int64)
        auc = roc_auc(labels == 1, probabilities[:, 1])
    else:
        predictions = probabilities.argmax(1)
        aucs = [roc_auc(labels == c, probabilities[:, c]) for c in range(k)]
        aucs = [a for a in aucs if a is not None]     # a class absent from the labels has no AUC
        auc = float(np.mean(aucs)) if aucs else None
    matrix = confusion_matrix(labels, predictions, k)
    out = {"count": int(len(labels)), "accuracy": float(np.mean(predictions == labels)),
           "macro_f1": macro_f1(matrix), "auc": auc, "confusion_matrix": matrix.tolist()}
    if class_names is not None:
        out["class_names"] = list(class_names)
    return out


def cross_entropy(labels, logits):
    """Mean negative log-likelihood of the true class, from logits."""
    logp = log_softmax(np.asarray(logits, np.float64), axis=1)
    return float(-np.mean(logp[np.arange(len(labels)), np.asarray(labels, np.int64)]))
