"""top_k_accuracy and mean_class_accuracy follow MMAction2's semantics, edge cases included."""

import numpy as np
import pytest

from actionray.platform.metrics import confusion_matrix, mean_class_accuracy, top_k_accuracy

SCORES = np.array([[0.1, 0.7, 0.2],    # pred 1, label 1: top-1 hit
                   [0.5, 0.2, 0.3],    # pred 0, label 2: second place -> top-2 hit
                   [0.2, 0.3, 0.5],    # pred 2, label 0: last place
                   [0.6, 0.3, 0.1]])   # pred 0, label 0: top-1 hit
LABELS = np.array([1, 2, 0, 0])


def test_top_k_accuracy_counts_label_among_k_highest_scores():
    assert top_k_accuracy(SCORES, LABELS, (1, 2, 3)) == [0.5, 0.75, 1.0]


def test_top_k_accuracy_with_int_k_returns_a_float_fraction():
    assert top_k_accuracy(SCORES, LABELS, 1) == pytest.approx(0.5)


def test_top_k_accuracy_k_larger_than_classes_is_all_hits():
    assert top_k_accuracy(SCORES, LABELS, 5) == 1.0


def test_top_k_accuracy_breaks_ties_like_argsort():
    # equal scores: MMAction2 takes argsort(...)[-1], the *last* tied index (stable sort, reversed)
    tied = np.array([[0.5, 0.5, 0.0]])
    assert top_k_accuracy(tied, [1], 1) == 1.0
    assert top_k_accuracy(tied, [0], 1) == 0.0


def test_top_k_accuracy_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="rows"):
        top_k_accuracy(SCORES, LABELS[:3], 1)


def test_mean_class_accuracy_averages_per_class_recall():
    # class 0: 1 of 2, class 1: 1 of 1, class 2: 0 of 1 -> (0.5 + 1 + 0) / 3
    assert mean_class_accuracy(SCORES, LABELS) == pytest.approx(0.5)


def test_mean_class_accuracy_counts_predicted_only_class_as_zero():
    # truth only has class 0; class 1 is predicted once: classes {0, 1} -> (1/2 + 0) / 2
    scores = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert mean_class_accuracy(scores, [0, 0]) == pytest.approx(0.25)


def test_mean_class_accuracy_ignores_classes_absent_from_truth_and_predictions():
    # 5 score columns, only classes 0 and 1 appear anywhere: perfect predictions give 1.0
    scores = np.eye(5)[[0, 1, 1]]
    assert mean_class_accuracy(scores, [0, 1, 1]) == 1.0


def test_confusion_matrix_rows_are_truth_columns_predictions():
    matrix = confusion_matrix([1, 0, 2, 0], LABELS, 3)
    assert matrix.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 0]]
