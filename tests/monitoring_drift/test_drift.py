"""Drift statistics against hand-computed values, reference statistics, thresholds, and
synthetic data with known shifts."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest

from servegraph.monitoring.drift import (
    DRIFT_DETECTED,
    NO_DATA,
    NO_DRIFT,
    POSSIBLE_DRIFT,
    DriftThresholds,
    FeatureReference,
    MonitoringError,
    ReferenceStatistics,
    bin_proportions,
    compare,
    feature_columns,
    hellinger,
    kl_divergence,
    ks_binned,
    ks_two_sample,
    population_stability_index,
    reference_statistics,
    total_variation,
)

TOL = 1e-9

# -- the statistics on tiny distributions, by hand -----------------------------------------------


def test_statistics_of_three_bins_with_an_empty_reference_bin() -> None:
    p = [0.5, 0.5, 0.0]  # reference
    q = [0.25, 0.25, 0.5]  # current
    # TVD: 0.5 * (0.25 + 0.25 + 0.5)
    assert total_variation(p, q) == pytest.approx(0.5, abs=TOL)
    # Hellinger: 0.5 * sum((sqrt p - sqrt q)^2) = 1 - sum(sqrt(p q)) = 1 - 2 sqrt(0.125)
    assert hellinger(p, q) == pytest.approx(math.sqrt(1 - 1 / math.sqrt(2)), abs=TOL)
    assert hellinger(p, q) == pytest.approx(0.5411961, abs=1e-7)
    # KL(q || p), the empty reference bin as 1e-4: 2 * 0.25 ln(0.5) + 0.5 ln(0.5 / 1e-4)
    assert kl_divergence(q, p) == pytest.approx(0.5 * math.log(2500), abs=TOL)
    assert kl_divergence(q, p) == pytest.approx(3.9120230, abs=1e-7)
    # PSI, both raised to 1e-4: 2 * (-0.25) ln(0.5) + (0.5 - 1e-4) ln(0.5 / 1e-4)
    psi = 0.5 * math.log(2) + 0.4999 * math.log(5000)
    assert population_stability_index(p, q) == pytest.approx(psi, abs=TOL)
    assert population_stability_index(p, q) == pytest.approx(4.6043185, abs=1e-7)
    # KS on the binned CDFs: [0.5, 1, 1] against [0.25, 0.5, 1]
    assert ks_binned(p, q) == pytest.approx(0.5, abs=TOL)


def test_statistics_of_a_small_shift() -> None:
    p = [0.2, 0.3, 0.5]
    q = [0.1, 0.4, 0.5]
    assert total_variation(p, q) == pytest.approx(0.1, abs=TOL)
    # sqrt(1 - (sqrt(0.02) + sqrt(0.12) + 0.5))
    assert hellinger(p, q) == pytest.approx(0.1103108, abs=1e-7)
    # 0.1 ln(0.1 / 0.2) + 0.4 ln(0.4 / 0.3) + 0.5 ln(1)
    assert kl_divergence(q, p) == pytest.approx(0.0457581, abs=1e-7)
    # (-0.1) ln(0.5) + 0.1 ln(4 / 3) + 0
    assert population_stability_index(p, q) == pytest.approx(0.0980829, abs=1e-7)
    # CDFs [0.2, 0.5, 1] and [0.1, 0.5, 1]
    assert ks_binned(p, q) == pytest.approx(0.1, abs=TOL)


def test_identical_and_disjoint_distributions_are_at_the_ends_of_the_scales() -> None:
    p = [0.25, 0.25, 0.5]
    assert total_variation(p, p) == 0
    assert hellinger(p, p) == 0
    assert kl_divergence(p, p) == 0
    assert population_stability_index(p, p) == 0
    assert total_variation([1, 0], [0, 1]) == 1
    assert hellinger([1, 0], [0, 1]) == pytest.approx(1.0, abs=TOL)


def test_kl_uses_the_epsilon_given() -> None:
    # 1.0 * ln(1 / 0.01): the current mass where the reference had none
    assert kl_divergence([0.0, 1.0], [1.0, 0.0], epsilon=0.01) == pytest.approx(math.log(100))


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1, 2, 3, 4], [3, 4, 5, 6], 0.5),  # F_a(2) = 0.5, F_b(2) = 0
        ([1, 2, 3], [4, 5], 1.0),  # disjoint
        ([0.1, 0.2, 0.3, 0.4, 0.5], [0.35], 0.6),  # F_a(0.3) = 0.6, F_b(0.3) = 0
        ([1, 2, 8, 9], [1, 2, 8, 9], 0.0),
        ([1, 1, 2], [1, 2, 2], 1 / 3),  # ties: F(1) = 2/3 against 1/3
    ],
)
def test_two_sample_ks_by_hand(a: list[float], b: list[float], expected: float) -> None:
    assert ks_two_sample(a, b) == pytest.approx(expected, abs=TOL)
    assert ks_two_sample(b, a) == pytest.approx(expected, abs=TOL)


def test_two_sample_ks_matches_scipy() -> None:
    from scipy.stats import ks_2samp  # type: ignore[import-untyped]

    rng = np.random.default_rng(7)
    a, b = rng.normal(size=400), rng.normal(0.3, 1.2, size=250)
    assert ks_two_sample(a, b) == pytest.approx(float(ks_2samp(a, b).statistic), abs=1e-12)


def test_two_sample_ks_needs_values_on_both_sides() -> None:
    with pytest.raises(MonitoringError, match="at least one value on each side"):
        ks_two_sample([1.0], [])


def test_bin_proportions_put_edge_values_in_the_bin_above() -> None:
    # bins (-inf, 1), [1, 2), [2, inf)
    assert bin_proportions([0, 1, 1.5, 2, 3], [1, 2]).tolist() == [0.2, 0.4, 0.4]
    assert bin_proportions([], [1, 2]).tolist() == [0.0, 0.0, 0.0]


# -- reference statistics ----------------------------------------------------------------------

ONE_TO_TEN = [float(x) for x in range(1, 11)]


def test_quantile_reference_by_hand() -> None:
    stats = reference_statistics({"x": ONE_TO_TEN}, bins=4)
    (x,) = stats.features
    # quantiles 0.25, 0.5, 0.75 of 1..10, interpolated: positions 2.25, 4.5, 6.75
    assert x.edges == (3.25, 5.5, 7.75)
    # 1 2 3 | 4 5 | 6 7 | 8 9 10
    assert x.proportions == pytest.approx((0.3, 0.2, 0.2, 0.3), abs=TOL)
    assert (x.count, x.missing, x.mean, x.min, x.max) == (10, 0, 5.5, 1.0, 10.0)
    assert x.std == pytest.approx(math.sqrt(55 / 6), abs=TOL)  # sum of squares 82.5 / 9
    assert x.sample == tuple(ONE_TO_TEN)  # fewer values than sample_size: all, sorted
    assert stats.binning == "quantile"
    assert stats.bins == 4


def test_uniform_reference_by_hand() -> None:
    stats = reference_statistics({"x": [0, 3, 6, 9, 1]}, bins=3, binning="uniform")
    (x,) = stats.features
    assert x.edges == (3.0, 6.0)  # equal widths between 0 and 9
    assert x.proportions == pytest.approx((0.4, 0.2, 0.4), abs=TOL)  # 0 1 | 3 | 6 9


def test_ties_give_fewer_bins() -> None:
    (x,) = reference_statistics({"x": [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]}, bins=10).features
    assert len(x.edges) < 9
    assert x.edges == tuple(sorted(set(x.edges)))
    assert sum(x.proportions) == pytest.approx(1.0)
    assert x.proportions[0] == 0  # nothing below 0


def test_a_constant_feature_has_a_bin_of_its_own() -> None:
    stats = reference_statistics({"c": [5.0, 5.0, 5.0]})
    (c,) = stats.features
    assert c.edges[0] == 5.0
    assert c.edges[1] == np.nextafter(5.0, math.inf)
    assert c.proportions == (0.0, 1.0, 0.0)
    assert c.std == 0.0
    drift = compare(stats, {"c": [4.0, 5.0, 6.0]}).feature("c")
    assert drift.current == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert drift.tvd == pytest.approx(2 / 3)


def test_missing_and_non_numeric_values_are_counted_and_left_out() -> None:
    (x,) = reference_statistics({"x": [1, None, float("nan"), "a", 2, math.inf]}).features
    assert (x.count, x.missing, x.mean) == (2, 4, 1.5)


class FakeFrame:
    """What a pandas DataFrame offers the reference: ``columns`` and ``frame[column]``."""

    def __init__(self, data: dict[str, list[float]]) -> None:
        self.data = data
        self.columns = list(data)

    def __getitem__(self, column: str) -> list[float]:
        return self.data[column]


DATA = {"a": [1.0, 2.0, 3.0, 4.0, 5.0], "b": [10.0, 0.0, 30.0, 20.0, 40.0]}
ROWS = [[a, b] for a, b in zip(DATA["a"], DATA["b"], strict=True)]


@pytest.mark.parametrize(
    ("data", "names"),
    [
        (DATA, None),
        (DATA, ["a", "b"]),
        (np.array(ROWS), ["a", "b"]),
        (ROWS, ["a", "b"]),
        ([{"a": a, "b": b} for a, b in ROWS], None),
        (FakeFrame(DATA), None),
    ],
    ids=["dict", "dict-named", "array", "rows", "dict-rows", "frame"],
)
def test_every_input_form_gives_the_same_statistics(data: Any, names: list[str] | None) -> None:
    stats = reference_statistics(data, names, bins=2)
    assert stats.feature_names == ("a", "b")
    assert stats.feature("a").edges == (3.0,)
    assert stats.feature("b").edges == (20.0,)
    assert stats.feature("b").proportions == (0.4, 0.6)


def test_feature_names_select_and_order_columns() -> None:
    stats = reference_statistics(DATA, ["b"], bins=2)
    assert stats.feature_names == ("b",)
    assert reference_statistics(np.array(ROWS), bins=2).feature_names == ("f0", "f1")


def test_the_sample_is_seeded_and_bounded() -> None:
    values = np.random.default_rng(3).normal(size=5000)
    first = reference_statistics({"x": values}, sample_size=100, seed=1).features[0]
    again = reference_statistics({"x": values}, sample_size=100, seed=1).features[0]
    other = reference_statistics({"x": values}, sample_size=100, seed=2).features[0]
    assert len(first.sample) == 100
    assert first.sample == again.sample
    assert first.sample != other.sample
    assert list(first.sample) == sorted(first.sample)
    assert set(first.sample) <= set(values.tolist())
    assert reference_statistics({"x": values}, sample_size=0).features[0].sample == ()


def test_json_round_trip(tmp_path: Path) -> None:
    stats = reference_statistics(DATA, bins=3)
    assert ReferenceStatistics.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
    path = stats.save(tmp_path / "reference.json")
    assert ReferenceStatistics.load(path) == stats
    assert json.loads(path.read_text())["format"] == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: reference_statistics(DATA, ["a", "z"]), "has no feature named 'z'"),
        (lambda: reference_statistics(ROWS, ["a"]), "2 columns but 1 feature names"),
        (lambda: reference_statistics([[1, 2], [3]]), "same length"),
        (lambda: reference_statistics({"x": [None, "a"]}), "feature 'x': no finite numeric"),
        (lambda: reference_statistics(DATA, bins=1), "bins must be a whole number of at least 2"),
        (lambda: reference_statistics(DATA, binning="log"), "binning 'log'"),  # type: ignore[arg-type]
        (lambda: reference_statistics(DATA, sample_size=-1), "sample_size must be 0 or more"),
        (lambda: reference_statistics(42), "cannot read features from a int"),
        (lambda: reference_statistics(DATA, ["a", "a"]), "feature names must be unique"),
    ],
)
def test_reference_errors_say_what_is_wrong(call: Any, message: str) -> None:
    with pytest.raises(MonitoringError, match=message):
        call()


def test_bad_reference_files(tmp_path: Path) -> None:
    with pytest.raises(MonitoringError, match="does not exist; compute them"):
        ReferenceStatistics.load(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(MonitoringError, match="is not JSON"):
        ReferenceStatistics.load(tmp_path / "bad.json")
    good = reference_statistics(DATA, bins=2).to_dict()
    with pytest.raises(MonitoringError, match="format 9 is not supported"):
        ReferenceStatistics.from_dict({**good, "format": 9})
    broken = json.loads(json.dumps(good))
    broken["features"][0]["proportions"] = [1.0]
    with pytest.raises(MonitoringError, match="feature 'a': 1 edges need 2 proportions, got 1"):
        ReferenceStatistics.from_dict(broken)
    del broken["features"][1]["mean"]
    broken["features"][0] = good["features"][0]
    with pytest.raises(MonitoringError, match="feature 'b': the field 'mean' is missing"):
        ReferenceStatistics.from_dict(broken)
    with pytest.raises(MonitoringError, match="a list of 'features'"):
        ReferenceStatistics.from_dict({"features": "x"})


def test_feature_lookup_names_the_known_features() -> None:
    stats = reference_statistics(DATA, bins=2)
    with pytest.raises(KeyError, match=r"no feature 'z'.*\('a', 'b'\)"):
        stats.feature("z")
    assert isinstance(stats.feature("a"), FeatureReference)


# -- compare: by hand ---------------------------------------------------------------------------


def test_compare_by_hand_with_the_sample() -> None:
    stats = reference_statistics({"x": ONE_TO_TEN}, bins=4)  # p = [0.3, 0.2, 0.2, 0.3]
    drift = compare(stats, {"x": [1.0, 2.0, 8.0, 9.0]}).feature("x")  # q = [0.5, 0, 0, 0.5]
    assert drift.current == pytest.approx((0.5, 0.0, 0.0, 0.5))
    assert drift.tvd == pytest.approx(0.4, abs=TOL)  # 0.5 * 4 * 0.2
    bc = 2 * math.sqrt(0.15)  # sum of sqrt(p q)
    assert drift.hellinger == pytest.approx(math.sqrt(1 - bc), abs=TOL)
    assert drift.hellinger == pytest.approx(0.4747666, abs=1e-7)
    assert drift.kl == pytest.approx(math.log(5 / 3), abs=TOL)  # 2 * 0.5 ln(0.5 / 0.3)
    psi = 2 * 0.2 * math.log(5 / 3) + 2 * (1e-4 - 0.2) * math.log(1e-4 / 0.2)
    assert drift.psi == pytest.approx(psi, abs=TOL)
    assert drift.psi == pytest.approx(3.2431711, abs=1e-7)
    # the sample is 1..10: F_ref(2) = 0.2 against F_cur(2) = 0.5
    assert drift.ks_method == "sample"
    assert drift.ks == pytest.approx(0.3, abs=TOL)
    assert drift.value == pytest.approx((0.4 + 0.4747666) / 2, abs=1e-7)
    assert drift.verdict == NO_DRIFT
    assert (drift.count, drift.missing, drift.mean, drift.min, drift.max) == (4, 0, 5.0, 1.0, 9.0)


def test_compare_by_hand_without_a_sample_uses_binned_ks() -> None:
    stats = reference_statistics({"x": ONE_TO_TEN}, bins=4, sample_size=0)
    drift = compare(stats, {"x": [1.0, 2.0, 8.0, 9.0]}).feature("x")
    # CDFs over the edges: [0.3, 0.5, 0.7] against [0.5, 0.5, 0.5]
    assert drift.ks_method == "binned"
    assert drift.ks == pytest.approx(0.2, abs=TOL)


def test_compare_reads_rows_in_the_reference_order_and_ignores_unknown_features() -> None:
    stats = reference_statistics(DATA, bins=2)
    by_rows = compare(stats, ROWS)
    by_name = compare(stats, {"b": DATA["b"], "a": DATA["a"], "extra": [1, 2, 3, 4, 5]})
    assert by_rows == by_name
    assert [f.tvd for f in by_rows.features] == [0.0, 0.0]


def test_a_feature_without_current_values_has_no_data() -> None:
    stats = reference_statistics(DATA, bins=2)
    result = compare(stats, {"a": [1.0, 5.0, None]})
    b = result.feature("b")
    assert (b.verdict, b.value, b.tvd, b.count, b.mean) == (NO_DATA, None, None, 0, None)
    assert result.feature("a").missing == 1
    assert result.value == result.feature("a").value  # the mean leaves "no data" out
    empty = compare(stats, np.empty((0, 2)))
    assert (empty.value, empty.verdict) == (None, NO_DATA)
    assert json.dumps(empty.to_dict(), allow_nan=False)


def test_the_overall_value_is_the_mean_or_the_worst() -> None:
    stats = reference_statistics({"x": ONE_TO_TEN, "y": ONE_TO_TEN}, bins=4)
    current = {"x": [1.0, 2.0, 8.0, 9.0], "y": [11.0, 12.0, 13.0, 14.0]}
    mean = compare(stats, current)
    x, y = mean.feature("x"), mean.feature("y")
    assert y.tvd == pytest.approx(0.7)  # everything in the top bin, which held 0.3
    assert mean.value == pytest.approx((x.value + y.value) / 2)  # type: ignore[operator]
    worst = compare(stats, current, DriftThresholds(overall="worst"))
    assert worst.value == y.value
    assert worst.verdict == y.verdict


# -- thresholds ---------------------------------------------------------------------------------


def test_default_thresholds_are_mlruns() -> None:
    rule = DriftThresholds()
    assert (rule.possible, rule.detected, rule.metric, rule.overall) == (
        0.5,
        0.7,
        "tvd_hellinger",
        "mean",
    )
    assert rule.verdict(0.49) == NO_DRIFT
    assert rule.verdict(0.5) == POSSIBLE_DRIFT
    assert rule.verdict(0.69) == POSSIBLE_DRIFT
    assert rule.verdict(0.7) == DRIFT_DETECTED
    assert rule.verdict(None) == NO_DATA


def test_thresholds_per_metric() -> None:
    psi = DriftThresholds.for_metric("psi")
    assert (psi.possible, psi.detected) == (0.1, 0.25)
    assert DriftThresholds.for_metric("ks", detected=0.9).possible == 0.5
    stats = reference_statistics({"x": ONE_TO_TEN}, bins=4)
    result = compare(stats, {"x": [1.0, 2.0, 8.0, 9.0]}, psi)
    assert result.feature("x").value == result.feature("x").psi
    assert result.verdict == DRIFT_DETECTED  # PSI 3.24


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"possible": 0.7, "detected": 0.5}, "need 0 < possible < detected <= 1"),
        ({"possible": 0.5, "detected": 1.5}, "need 0 < possible < detected <= 1"),
        ({"possible": 0.0}, "need 0 < possible"),
        ({"metric": "js"}, "metric 'js' is not one of"),
        ({"overall": "max"}, "overall 'max' is not one of"),
    ],
)
def test_bad_thresholds(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(MonitoringError, match=message):
        DriftThresholds(**kwargs)


def test_unbounded_metrics_take_thresholds_above_one() -> None:
    assert DriftThresholds(possible=1.0, detected=3.0, metric="kl").detected == 3.0


# -- synthetic data with known shifts -----------------------------------------------------------

NORMAL = NormalDist()


def binned_normal_shift(shift: float) -> tuple[float, float]:
    """TVD and Hellinger between N(0, 1) and N(shift, 1) over the deciles of N(0, 1)."""
    edges = [-math.inf, *(NORMAL.inv_cdf(i / 10) for i in range(1, 10)), math.inf]
    shifted = NormalDist(shift, 1)
    q = [shifted.cdf(b) - shifted.cdf(a) for a, b in itertools.pairwise(edges)]
    p = [0.1] * 10
    return total_variation(p, q), hellinger(p, q)


@pytest.fixture(scope="module")
def normal_reference() -> ReferenceStatistics:
    training = np.random.default_rng(11).normal(size=20_000)
    return reference_statistics({"x": training})


@pytest.mark.parametrize(
    ("shift", "verdict"),
    [
        (0.0, NO_DRIFT),
        (0.5, NO_DRIFT),  # TVD 0.20, Hellinger 0.17
        (1.0, NO_DRIFT),  # 0.38 and 0.33
        (2.0, POSSIBLE_DRIFT),  # 0.68 and 0.59: mean 0.63
        (3.0, DRIFT_DETECTED),  # 0.86 and 0.74: mean 0.80
    ],
)
def test_mean_shifts_of_a_normal_feature(
    normal_reference: ReferenceStatistics, shift: float, verdict: str
) -> None:
    current = np.random.default_rng(12).normal(shift, 1.0, size=5_000)
    drift = compare(normal_reference, {"x": current}).feature("x")
    tvd, hel = binned_normal_shift(shift)
    # Sampling error of 5,000 values over 10 bins is about 0.01 on either distance.
    assert drift.tvd == pytest.approx(tvd, abs=0.03)
    assert drift.hellinger == pytest.approx(hel, abs=0.03)
    # The two-sample KS of a shift d between unit normals is 2 * Phi(d / 2) - 1.
    assert drift.ks == pytest.approx(2 * NORMAL.cdf(shift / 2) - 1, abs=0.05)
    assert drift.verdict == verdict


def test_the_expected_distances_put_the_shifts_where_the_verdicts_say() -> None:
    # The verdicts above follow from the distributions, not from the sample drawn.
    means = {shift: sum(binned_normal_shift(shift)) / 2 for shift in (0.5, 1.0, 2.0, 3.0)}
    assert means[0.5] < means[1.0] < 0.5 <= means[2.0] < 0.7 <= means[3.0]


def test_every_statistic_grows_with_the_shift(normal_reference: ReferenceStatistics) -> None:
    rng = np.random.default_rng(13)
    drifts = [
        compare(normal_reference, {"x": rng.normal(shift, 1.0, size=5_000)}).feature("x")
        for shift in (0.0, 0.5, 1.0, 2.0)
    ]
    for name in ("tvd", "hellinger", "kl", "psi", "ks"):
        values = [getattr(drift, name) for drift in drifts]
        assert values == sorted(values), name
    assert drifts[0].psi is not None
    assert drifts[0].psi < 0.01  # the usual PSI reading: < 0.1 is stable


def test_one_drifting_feature_among_stable_ones(normal_reference: ReferenceStatistics) -> None:
    training = np.random.default_rng(14).normal(size=(20_000, 3))
    stats = reference_statistics(training, ["a", "b", "c"])
    current = np.random.default_rng(15).normal(size=(3_000, 3))
    current[:, 2] += 3.0
    mean = compare(stats, current)
    assert [f.verdict for f in mean.features] == [NO_DRIFT, NO_DRIFT, DRIFT_DETECTED]
    assert mean.verdict == NO_DRIFT  # MLRun's mean dilutes one feature among three
    assert compare(stats, current, DriftThresholds(overall="worst")).verdict == DRIFT_DETECTED


def test_feature_columns_accepts_column_tensors_and_single_rows() -> None:
    columns = feature_columns({"x": [[1.0], [2.0]]}, ["x"])
    assert columns["x"].tolist() == [1.0, 2.0]
    single = feature_columns({"x": 1.5, "y": 2}, ["x", "y"])
    assert {name: values.tolist() for name, values in single.items()} == {"x": [1.5], "y": [2.0]}
