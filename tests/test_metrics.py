"""Metrics against hand-computed values (MedMNIST's definitions)."""

import numpy as np
import pytest

from mail_tf.training.metrics import classification_metrics, confusion_matrix, cross_entropy, macro_f1, roc_auc


def test_roc_auc_hand_values():
    # Pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3 of 4.
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)          # a tie counts one half
    assert roc_auc([1, 1], [0.2, 0.3]) is None                       # undefined with one class


def test_binary_metrics_threshold_the_positive_probability():
    labels = np.array([0, 0, 1, 1, 1])
    p1 = np.array([0.2, 0.6, 0.7, 0.4, 0.9])
    m = classification_metrics(labels, np.stack([1 - p1, p1], 1), ["neg", "pos"])
    # predictions 0 1 1 0 1 -> 3 of 5 right
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    # F1 neg: 2*1/(2+1+1)=0.5; pos: 2*2/(4+1+1)=2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    # pos scores .7 .4 .9 vs neg .2 .6: wins 2 + 1 + 2 = 5 of 6
    assert m["auc"] == pytest.approx(5 / 6)
    assert m["count"] == 5 and m["class_names"] == ["neg", "pos"]


def test_multiclass_auc_is_mean_one_vs_rest():
    labels = np.array([0, 1, 2, 2])
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
    m = classification_metrics(labels, probs)
    per_class = [roc_auc(labels == c, probs[:, c]) for c in range(3)]
    assert per_class == pytest.approx([1.0, 1.0, 1.0])
    assert m["auc"] == pytest.approx(1.0)
    assert m["accuracy"] == pytest.approx(0.75)                      # the last one is argmax 0
    np.testing.assert_array_equal(confusion_matrix(labels, probs.argmax(1), 3), [[1, 0, 0], [0, 1, 0], [1, 0, 1]])


def test_macro_f1_ignores_classes_absent_from_labels_and_predictions():
    matrix = np.array([[2, 0, 0], [0, 0, 0], [1, 0, 1]])
    # class 0: 2*2/(2*2+1) = 0.8; class 2: 2/(2+1) = 2/3; class 1 absent
    assert macro_f1(matrix) == pytest.approx((0.8 + 2 / 3) / 2)


def test_cross_entropy_from_logits():
    logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])
    assert cross_entropy([0, 0], logits) == pytest.approx((np.log(2) + np.log(4 / 3)) / 2)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expected probabilities of shape \(3, classes\)"):
        classification_metrics([0, 1, 1], np.ones((2, 2)) / 2)
