"""Study statistics against values worked out by hand from the textbook formulas (and t tables),
not against scipy itself."""

import math

import pytest

from nima.study.stats import compare, estimate, hedges_g


def test_estimate_mean_std_and_t_interval():
    e = estimate([1.0, 2.0, 3.0, 4.0])
    assert (e.n, e.mean) == (4, 2.5)
    assert e.std == pytest.approx(math.sqrt(5 / 3))  # sum of squares 5, n - 1 = 3
    half = 3.182446 * math.sqrt(5 / 3) / 2  # t(0.975, 3) from a t table
    assert (e.ci_low, e.ci_high) == pytest.approx((2.5 - half, 2.5 + half), abs=1e-5)


def test_estimate_two_values_uses_t_with_one_degree_of_freedom():
    e = estimate([3.0, 5.0])
    half = 12.706205 * math.sqrt(2) / math.sqrt(2)  # t(0.975, 1) = 12.7062; s = sqrt(2)
    assert (e.ci_low, e.ci_high) == pytest.approx((4 - half, 4 + half), abs=1e-5)


def test_estimate_of_one_value_has_no_spread():
    e = estimate([3.0])
    assert e.n == 1 and e.mean == 3.0
    assert math.isnan(e.std) and math.isnan(e.ci_low) and math.isnan(e.ci_high)


def p_two_sided_df2(t: float) -> float:
    """Student's t with 2 degrees of freedom has the closed-form CDF 1/2 + t / (2 sqrt(2 + t^2))."""
    return 1 - abs(t) / math.sqrt(2 + t * t)


def test_paired_t_test_when_the_seeds_match():
    variant = {1: 1.0, 2: 2.0, 3: 3.5}
    baseline = {1: 0.5, 2: 1.0, 3: 2.0}  # differences 0.5, 1.0, 1.5: mean 1, sd 0.5
    c = compare(variant, baseline)
    t = 1.0 / (0.5 / math.sqrt(3))
    assert c.test == "paired"
    assert (c.diff, c.t, c.df) == pytest.approx((1.0, t, 2))
    assert c.p == pytest.approx(p_two_sided_df2(t))  # 0.0742


def test_paired_with_two_seeds_matches_the_cauchy_closed_form():
    c = compare({7: 2.0, 8: 3.0}, {7: 1.5, 8: 1.0})  # differences 0.5, 2.0
    t = 1.25 / (math.sqrt(1.125) / math.sqrt(2))
    assert (c.test, c.df) == ("paired", 1)
    assert c.t == pytest.approx(t)
    assert c.p == pytest.approx(1 - 2 / math.pi * math.atan(abs(t)))  # t(1) is Cauchy


def test_welch_t_test_when_the_seeds_differ():
    c = compare({1: 0.0, 2: 2.0}, {3: 3.0, 4: 5.0})
    # s1^2 = s2^2 = 2, n = 2 each: t = -3 / sqrt(2/2 + 2/2), Welch-Satterthwaite df = 2
    t = -3 / math.sqrt(2)
    assert c.test == "welch"
    assert (c.diff, c.t, c.df) == pytest.approx((-3.0, t, 2.0))
    assert c.p == pytest.approx(p_two_sided_df2(t))  # 0.168


def test_welch_unequal_variances_against_the_formula_and_a_published_example():
    # Welch's t-test example (unequal variances, n = 15 each): t = -2.46, df = 24.99, p = 0.021
    a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    c = compare(dict(enumerate(a)), {i + 100: v for i, v in enumerate(b)})
    mean = lambda x: sum(x) / len(x)
    var = lambda x: sum((v - mean(x)) ** 2 for v in x) / (len(x) - 1)
    se2a, se2b = var(a) / len(a), var(b) / len(b)
    t = (mean(a) - mean(b)) / math.sqrt(se2a + se2b)
    df = (se2a + se2b) ** 2 / (se2a**2 / (len(a) - 1) + se2b**2 / (len(b) - 1))
    assert c.test == "welch"
    assert (c.t, c.df) == pytest.approx((t, df))
    assert (round(c.t, 2), round(c.df, 2), round(c.p, 3)) == (-2.46, 24.99, 0.021)


def test_hedges_g_is_cohens_d_with_the_small_sample_correction():
    # pooled sd sqrt(2); d = -3 / sqrt(2); J = 1 - 3 / (4 * 4 - 9) = 4 / 7
    assert hedges_g([0.0, 2.0], [3.0, 5.0]) == pytest.approx(4 / 7 * -3 / math.sqrt(2))
    assert compare({1: 0.0, 2: 2.0}, {3: 3.0, 4: 5.0}).hedges_g == pytest.approx(-1.2122, abs=1e-4)


def test_no_test_below_two_values_a_side():
    assert compare({1: 1.0}, {1: 2.0, 2: 3.0}) is None
    assert compare({1: 1.0, 2: 2.0}, {}) is None


def test_report_says_steps_vary_when_a_variant_sets_train_steps(tmp_path) -> None:
    from nima.study.report import StudyResults, results_markdown

    plan = {"study_file": "budget.gin", "metric": "final_val_loss", "lower_is_better": True,
            "baseline": "steps=2000", "seeds": [1, 2], "steps": 2000,
            "variants": [{"name": "steps=2000", "bindings": ["train.steps = 2000"]},
                         {"name": "steps=4500", "bindings": ["train.steps = 4500"]}]}  # fmt: skip
    text = results_markdown(StudyResults(tmp_path, plan, []))
    assert "train.steps as each variant sets it" in text and "2000 steps each" not in text
    plan["variants"] = [{"name": "rope", "bindings": ["GPT.positional = @positional.rope"]}]
    assert "2000 steps each" in results_markdown(StudyResults(tmp_path, plan, []))
