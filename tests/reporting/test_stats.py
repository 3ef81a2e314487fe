"""McNemar, Holm, Wilson and the bootstrap against hand-computed cases, the degenerate ones included."""
import numpy as np
import pytest

from showdown.reporting.stats import bootstrap_ci, compare, holm, mcnemar_exact, p_said, wilson_interval


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
    # no image tells them apart: said so, not as a bootstrap interval of "+0.0 to +0.0 points"
    assert result.verdict() == "A and B are right on the same test images: not distinguishable on this data " \
        "(McNemar p = 1)"
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
    assert result.verdict().startswith("ResNet50 is better than VGG16 (McNemar p < 0.0001; 30 vs 2 discordant")


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


def test_a_bootstrap_interval_that_leaves_out_zero_is_no_second_verdict_beside_mcnemar():
    """With few discordant images a percentile bootstrap leaves out 0 almost by itself (4 vs 0 of 40: a
    resample draws none of the four 1.5 % of the time): McNemar decides, the interval only shows the width."""
    from showdown.reporting.stats import Comparison

    said = Comparison("A", "B", 0.625, 0.45, 10, 3, 0.092, 0.025, 0.45).verdict()
    assert said == ("A and B are not distinguishable on this data (McNemar p = 0.092; 10 vs 3 discordant images; "
                    "accuracy difference A - B +2.5 to +45.0 points, 95 % bootstrap)")
    better = Comparison("A", "B", 0.8, 0.5, 12, 0, 0.0005, 0.2, 0.4).verdict()
    assert better.startswith("A is better than B (McNemar p = 0.0005; 12 vs 0 discordant images; accuracy difference")


def test_wilson_intervals_match_the_tables_and_never_shrink_to_a_point():
    # Wilson's score interval, z = 1.96: 32 of 40 -> 0.652-0.895; 40 of 40 -> 0.912-1 (the bootstrap gave 1-1)
    assert wilson_interval(0.8, 40) == pytest.approx((0.652, 0.895), abs=5e-4)
    assert wilson_interval(1.0, 40) == pytest.approx((0.912, 1.0), abs=5e-4)
    assert wilson_interval(0.0, 10)[1] == pytest.approx(0.278, abs=5e-4)


def test_holm_adjusts_the_smallest_p_by_the_number_of_pairs_and_keeps_the_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5] and holm([0.6, 0.9]) == [1.0, 1.0]
    from showdown.reporting.stats import adjusted

    tests = adjusted([compare("A", *_pairs(40, 9, 1, 0)[:1], "B", _pairs(40, 9, 1, 0)[1]) for _ in range(3)])
    assert all(t.p_value < 0.05 and t.p_adjusted == pytest.approx(3 * t.p_value) for t in tests)
    assert not tests[0].significant  # 0.021 alone, 0.064 over three pairs
    assert "McNemar p = 0.021, Holm-adjusted over 3 pairs p = 0.064" in tests[0].verdict()


def test_p_values_are_never_rounded_onto_the_threshold():
    assert [p_said(p) for p in (0.0501, 0.0498, 0.04996, 0.05, 0.012, 1.0, 3e-7)] == [
        "= 0.0501", "= 0.0498", "= 0.04996", "= 0.05", "= 0.012", "= 1", "< 0.0001"]


def test_with_seeds_each_image_counts_by_its_share_of_seeds_right():
    a = np.array([1, 2 / 3, 1 / 3, 0, 1])
    b = np.array([1, 1 / 3, 1 / 3, 1, 4 / 6])
    assert mcnemar_exact(a, b)[:2] == (2, 1)  # 2/3 > 1/3 and 1 > 4/6; 0 < 1; 1/3 = 1/3
    # the mean difference is tested (sign flips of the per-image differences), seeded: the same p every time
    ahead, behind = np.array([1] * 20 + [2 / 3] * 10 + [0] * 10), np.array([1 / 3] * 20 + [1] * 10 + [0] * 10)
    assert mcnemar_exact(ahead, behind)[2] == mcnemar_exact(ahead, behind)[2] < 0.01  # +2/3 on 20, -1/3 on 10
    assert mcnemar_exact(np.array([0.6, 0.4] * 20), np.full(40, 0.5))[2] > 0.5  # +0.1 and -0.1 alike: no evidence
    # and the verdict names that test, not McNemar's (which it is with one seed)
    assert compare("A", ahead, "B", behind).tested().startswith("sign-flip permutation p = ")
    assert compare("A", ahead.round(), "B", behind.round()).tested().startswith("McNemar p ")
