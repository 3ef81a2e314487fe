"""McNemar and bootstrap against hand-computed cases, the degenerate ones included."""
import numpy as np
import pytest

from showdown.reporting.stats import bootstrap_ci, compare, mcnemar_exact


def _pairs(both, only_a, only_b, neither):
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    return np.array(a, bool), np.array(b, bool)


def test_mcnemar_exact_matches_the_binomial_by_hand():
    # 1 vs 9 discordant: p = 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11 / 1024
    only_a, only_b, p = mcnemar_exact(*_pairs(50, 1, 9, 10))
    assert (only_a, only_b) == (1, 9)
    assert p == pytest.approx(22 / 1024)
    # 3 vs 3: perfectly balanced, p = 1
    assert mcnemar_exact(*_pairs(5, 3, 3, 1))[2] == pytest.approx(1.0)
    # 0 vs 6: p = 2 / 64
    assert mcnemar_exact(*_pairs(10, 0, 6, 0))[2] == pytest.approx(2 / 64)


def test_degenerate_cases_identical_and_no_discordant_pairs():
    same = np.array([1, 0, 1, 1, 0], bool)
    assert mcnemar_exact(same, same) == (0, 0, 1.0)
    result = compare("A", same, "B", same)
    assert not result.significant and result.diff_low == 0 and result.diff_high == 0
    assert "A and B are not distinguishable on this data (McNemar p = 1" in result.verdict()
    assert "accuracy difference A - B" in result.verdict() and "95 % bootstrap" in result.verdict()
    with pytest.raises(ValueError):
        mcnemar_exact(same, same[:3])


def test_bootstrap_interval_of_a_known_proportion():
    values = np.array([1] * 80 + [0] * 20, float)
    low, high = bootstrap_ci(values, resamples=5000)
    # normal approximation by hand: 0.8 ± 1.96 * sqrt(0.8 * 0.2 / 100) = 0.8 ± 0.078
    assert low == pytest.approx(0.722, abs=0.02) and high == pytest.approx(0.878, abs=0.02)
    assert bootstrap_ci(np.ones(30)) == (1.0, 1.0)  # no variation, no width


def test_a_clear_winner_is_named_plainly():
    result = compare("ResNet50", *_pairs(40, 30, 2, 8)[:1], "VGG16", _pairs(40, 30, 2, 8)[1])
    assert result.significant and result.diff_low > 0
    assert result.verdict().startswith("ResNet50 is better than VGG16 (McNemar p = ")


def test_macro_averages_leave_out_a_class_with_no_test_image_that_was_never_predicted():
    from showdown.reporting.metrics import classification_metrics

    y_true = np.array([0, 0, 1, 1])
    probs = np.eye(4)[[0, 1, 1, 1]]  # one daisy called a rose; the 3rd and 4th classes: no test image, no call
    metrics = classification_metrics(y_true, probs, ["daisy", "roses", "lonely", "pair"])
    assert metrics["macro_recall"] == 0.75 and metrics["macro_precision"] == (1 + 2 / 3) / 2
    assert metrics["per_class"]["lonely"]["support"] == 0 and len(metrics["confusion_matrix"]) == 4
    called = classification_metrics(y_true, np.eye(4)[[0, 0, 2, 1]], ["daisy", "roses", "lonely", "pair"])
    assert called["macro_recall"] == (1 + 0.5 + 0) / 3  # a class predicted with no test image counts, at 0


def test_a_verdict_tells_the_difference_as_better_minus_worse_whichever_was_named_first():
    worse, better = np.array([1] * 5 + [0] * 15), np.array([1] * 20)
    for first, second in ((("B", worse), ("A", better)), (("A", better), ("B", worse))):
        verdict = compare(*first, *second).verdict()
        assert verdict.startswith("A is better than B") and "difference +" in verdict and " to +" in verdict


def test_a_bootstrap_interval_that_leaves_out_zero_beside_mcnemar_not_significant_is_called_borderline():
    from showdown.reporting.stats import Comparison

    borderline = Comparison("A", "B", 0.625, 0.45, 10, 3, 0.092, 0.025, 0.45).verdict()
    assert borderline.startswith("A and B: borderline, the two tests disagree (McNemar p = 0.092, not significant; "
                                 "10 vs 3 discordant images") and borderline.endswith("which leaves out 0)")
    better = Comparison("A", "B", 0.8, 0.5, 12, 0, 0.0005, 0.2, 0.4).verdict()
    assert better.startswith("A is better than B (McNemar p = 0.0005; 12 vs 0 discordant images; accuracy difference")
