"""Data drift: reference statistics of a model's training features, and how far live inputs moved.

A model's **reference statistics** are computed once, from its training data, and saved as JSON
beside the model (``reference.json``). Per numeric feature they hold the bin edges, the share
of the training values in each bin, the count, mean, standard deviation, minimum and maximum,
and a seeded sample of at most ``sample_size`` training values. :func:`compare` then bins the
live values of each feature over the same edges and computes five statistics between the
reference proportions ``p`` and the current proportions ``q``:

- total variation distance ``TVD = 0.5 * sum(|p - q|)``, in [0, 1];
- Hellinger distance ``H = sqrt(0.5 * sum((sqrt(p) - sqrt(q))**2))``, normalised to [0, 1]
  (the ``0.5`` makes 1 the distance between distributions with no bin in common);
- Kullback-Leibler divergence ``KL(q || p) = sum(q * ln(q / p))`` in nats, where an empty
  current bin adds 0 and an empty reference bin counts as ``epsilon`` (default 1e-4);
- population stability index ``PSI = sum((q - p) * ln(q / p))``, every proportion below
  ``epsilon`` raised to ``epsilon`` first;
- Kolmogorov-Smirnov ``KS = max |F_ref(x) - F_cur(x)|``: the two-sample statistic between the
  stored reference sample and every current value; when the reference was built without a
  sample (``sample_size=0``), the same maximum over the bin edges of the binned CDFs, which is
  a lower bound of the sample statistic.

Bins are quantile bins by default: ``bins`` bins that hold equal shares of the training values
(fewer when values tie), the outer two open to -inf and +inf, so that any live value has a bin.
A constant feature gets three bins: below, equal to and above its value.

The verdict follows MLRun's default data drift application: per feature, the mean of TVD and
Hellinger; "possible drift" from 0.5, "drift detected" from 0.7; overall, the mean of the
features' values. The statistic, both thresholds and the overall rule (mean or worst feature)
are configurable with :class:`DriftThresholds`.

Values that are missing, not numbers, NaN or infinite are counted as missing and left out.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from servegraph.errors import MissingDependencyError, ServegraphError

try:
    import numpy as np
    import numpy.typing as npt
except ImportError as exc:  # pragma: no cover - numpy comes with the models extra
    _module = "numpy"
    raise MissingDependencyError(_module, "models") from exc

FloatArray = npt.NDArray[np.float64]

Binning = Literal["quantile", "uniform"]
Metric = Literal["tvd_hellinger", "tvd", "hellinger", "kl", "psi", "ks"]
Overall = Literal["mean", "worst"]
Verdict = Literal["no drift", "possible drift", "drift detected", "no data"]

BINNINGS: tuple[Binning, ...] = ("quantile", "uniform")
METRICS: tuple[Metric, ...] = ("tvd_hellinger", "tvd", "hellinger", "kl", "psi", "ks")
OVERALLS: tuple[Overall, ...] = ("mean", "worst")
BOUNDED_METRICS = frozenset({"tvd_hellinger", "tvd", "hellinger", "ks"})
"""The metrics that live in [0, 1]; KL and PSI have no upper bound."""

NO_DRIFT: Verdict = "no drift"
POSSIBLE_DRIFT: Verdict = "possible drift"
DRIFT_DETECTED: Verdict = "drift detected"
NO_DATA: Verdict = "no data"
VERDICTS: tuple[Verdict, ...] = (NO_DRIFT, POSSIBLE_DRIFT, DRIFT_DETECTED, NO_DATA)

DEFAULT_BINS = 10
DEFAULT_SAMPLE_SIZE = 1000
EPSILON = 1e-4
"""The proportion an empty bin counts as in KL and PSI, whose logarithms need it above 0."""

DEFAULT_THRESHOLDS: dict[str, tuple[float, float]] = {
    "tvd_hellinger": (0.5, 0.7),
    "tvd": (0.5, 0.7),
    "hellinger": (0.5, 0.7),
    "ks": (0.5, 0.7),
    "kl": (0.5, 0.7),
    "psi": (0.1, 0.25),
}
"""(possible, detected) per metric: MLRun's 0.5 and 0.7, and for PSI the usual 0.1 and 0.25."""

FORMAT_VERSION = 1
"""The version of the reference statistics' JSON layout, written as ``"format"``."""


class MonitoringError(ServegraphError, ValueError):
    """Input the drift check cannot use: a bad data frame, reference file or threshold."""


# -- the statistics ---------------------------------------------------------------------------


def total_variation(p: Sequence[float] | FloatArray, q: Sequence[float] | FloatArray) -> float:
    """``0.5 * sum(|p - q|)``: half the L1 distance between two distributions, in [0, 1]."""
    return float(0.5 * np.abs(_array(p) - _array(q)).sum())


def hellinger(p: Sequence[float] | FloatArray, q: Sequence[float] | FloatArray) -> float:
    """``sqrt(0.5 * sum((sqrt(p) - sqrt(q))**2))``, in [0, 1]."""
    difference = np.sqrt(_array(p)) - np.sqrt(_array(q))
    return float(math.sqrt(0.5 * float((difference**2).sum())))


def kl_divergence(
    q: Sequence[float] | FloatArray, p: Sequence[float] | FloatArray, epsilon: float = EPSILON
) -> float:
    """``KL(q || p) = sum(q * ln(q / p))`` in nats: ``q`` is current, ``p`` the reference.

    A bin with ``q == 0`` adds 0 (the limit of ``q ln q``); a reference proportion below
    ``epsilon`` counts as ``epsilon``, so that a current value where the training data had none
    costs ``q * ln(q / epsilon)`` instead of infinity.
    """
    q_arr, p_arr = _array(q), np.maximum(_array(p), epsilon)
    present = q_arr > 0
    value = float((q_arr[present] * np.log(q_arr[present] / p_arr[present])).sum())
    return max(value, 0.0)  # rounding can leave -1e-17 for equal distributions


def population_stability_index(
    p: Sequence[float] | FloatArray, q: Sequence[float] | FloatArray, epsilon: float = EPSILON
) -> float:
    """``PSI = sum((q - p) * ln(q / p))`` with both proportions raised to ``epsilon`` first."""
    p_arr = np.maximum(_array(p), epsilon)
    q_arr = np.maximum(_array(q), epsilon)
    return float(((q_arr - p_arr) * np.log(q_arr / p_arr)).sum())


def ks_binned(p: Sequence[float] | FloatArray, q: Sequence[float] | FloatArray) -> float:
    """The largest gap between the two binned CDFs, over the bin edges."""
    return float(np.abs(np.cumsum(_array(p)) - np.cumsum(_array(q))).max(initial=0.0))


def ks_two_sample(a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic ``max |F_a(x) - F_b(x)|`` over all ``x``."""
    a_sorted, b_sorted = np.sort(_array(a)), np.sort(_array(b))
    if a_sorted.size == 0 or b_sorted.size == 0:
        msg = "the Kolmogorov-Smirnov statistic needs at least one value on each side"
        raise MonitoringError(msg)
    # Both empirical CDFs only step at the pooled values: compare them there.
    pooled = np.concatenate([a_sorted, b_sorted])
    cdf_a = np.searchsorted(a_sorted, pooled, side="right") / a_sorted.size
    cdf_b = np.searchsorted(b_sorted, pooled, side="right") / b_sorted.size
    return float(np.abs(cdf_a - cdf_b).max())


def bin_proportions(
    values: Sequence[float] | FloatArray, edges: Sequence[float] | FloatArray
) -> FloatArray:
    """The share of ``values`` in each of the ``len(edges) + 1`` bins that ``edges`` cut.

    Bin 0 is ``(-inf, edges[0])``, bin i is ``[edges[i-1], edges[i])``, the last is
    ``[edges[-1], +inf)``. No values give all zeros.
    """
    arr = _array(values)
    counts = np.bincount(
        np.searchsorted(_array(edges), arr, side="right"), minlength=len(edges) + 1
    )
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


# -- reference statistics ---------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureReference:
    """The training distribution of one numeric feature."""

    name: str
    edges: tuple[float, ...]
    """The inner bin edges, increasing; the bins are open to -inf and +inf at the ends."""
    proportions: tuple[float, ...]
    """The share of training values in each bin (``len(edges) + 1`` of them, summing to 1)."""
    count: int
    """Training values used (missing ones left out)."""
    missing: int
    """Training values that were missing, not numbers, NaN or infinite."""
    mean: float
    std: float
    """The sample standard deviation (divisor ``count - 1``; 0 for a single value)."""
    min: float
    max: float
    sample: tuple[float, ...] = ()
    """Sorted training values for the Kolmogorov-Smirnov statistic: all of them, or a seeded
    random subset; empty when built with ``sample_size=0``."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "edges": list(self.edges),
            "proportions": list(self.proportions),
            "count": self.count,
            "missing": self.missing,
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "sample": list(self.sample),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureReference:
        where = f"feature {data.get('name')!r}" if isinstance(data, Mapping) else "a feature"
        try:
            feature = cls(
                name=str(data["name"]),
                edges=tuple(float(x) for x in data["edges"]),
                proportions=tuple(float(x) for x in data["proportions"]),
                count=int(data["count"]),
                missing=int(data.get("missing", 0)),
                mean=float(data["mean"]),
                std=float(data["std"]),
                min=float(data["min"]),
                max=float(data["max"]),
                sample=tuple(float(x) for x in data.get("sample", ())),
            )
        except KeyError as exc:
            msg = f"reference statistics, {where}: the field {exc.args[0]!r} is missing"
            raise MonitoringError(msg) from None
        except (TypeError, ValueError) as exc:
            msg = f"reference statistics, {where}: {exc}"
            raise MonitoringError(msg) from None
        if len(feature.proportions) != len(feature.edges) + 1:
            msg = (
                f"reference statistics, {where}: {len(feature.edges)} edges need "
                f"{len(feature.edges) + 1} proportions, got {len(feature.proportions)}"
            )
            raise MonitoringError(msg)
        if any(b <= a for a, b in itertools.pairwise(feature.edges)):
            msg = f"reference statistics, {where}: the edges must increase"
            raise MonitoringError(msg)
        return feature


@dataclass(frozen=True)
class ReferenceStatistics:
    """Every feature's training distribution, in the model's feature order."""

    features: tuple[FeatureReference, ...]
    binning: Binning = "quantile"
    bins: int = DEFAULT_BINS
    """The number of bins asked for (a feature with ties may have fewer)."""

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)

    def feature(self, name: str) -> FeatureReference:
        for feature in self.features:
            if feature.name == name:
                return feature
        msg = f"no feature {name!r} in the reference statistics; known: {self.feature_names}"
        raise KeyError(msg)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "binning": self.binning,
            "bins": self.bins,
            "features": [feature.to_dict() for feature in self.features],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceStatistics:
        if not isinstance(data, Mapping) or not isinstance(data.get("features"), list):
            msg = "reference statistics: expected an object with a list of 'features'"
            raise MonitoringError(msg)
        version = data.get("format", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            msg = (
                f"reference statistics: format {version!r} is not supported (this servegraph "
                f"reads format {FORMAT_VERSION}); compute them again with reference_statistics()"
            )
            raise MonitoringError(msg)
        binning = data.get("binning", "quantile")
        if binning not in BINNINGS:
            msg = f"reference statistics: binning {binning!r} is not one of {BINNINGS}"
            raise MonitoringError(msg)
        features = tuple(FeatureReference.from_dict(item) for item in data["features"])
        return cls(features, binning=binning, bins=int(data.get("bins", DEFAULT_BINS)))

    def save(self, path: str | Path) -> Path:
        """Write the statistics as JSON (e.g. ``model_dir/reference.json``); returns the path."""
        target = Path(path)
        target.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | Path) -> ReferenceStatistics:
        """Read statistics that :meth:`save` wrote."""
        source = Path(path)
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            msg = (
                f"reference statistics: {source} does not exist; compute them from the "
                "training data with reference_statistics(...).save(path)"
            )
            raise MonitoringError(msg) from None
        except json.JSONDecodeError as exc:
            msg = f"reference statistics: {source} is not JSON: {exc}"
            raise MonitoringError(msg) from None
        return cls.from_dict(data)


def reference_statistics(
    data: Any,
    feature_names: Sequence[str] | None = None,
    *,
    bins: int = DEFAULT_BINS,
    binning: Binning = "quantile",
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
) -> ReferenceStatistics:
    """Compute the reference statistics of every feature of a training data set.

    Args:
        data: a 2-D array or list of rows (columns named by ``feature_names``, default
            ``f0, f1, ...``), a dict of feature name to values, a list of dicts (one per row),
            or a data frame (anything with ``columns``; pandas is not imported).
        feature_names: the features to keep, in the model's input order (default: every
            column of ``data``).
        bins: how many bins per feature.
        binning: ``"quantile"`` (bins of equal training share) or ``"uniform"`` (equal width
            between the training minimum and maximum); the outer bins are always open.
        sample_size: how many training values per feature to keep for the Kolmogorov-Smirnov
            statistic (0 keeps none and makes KS use the binned CDFs).
        seed: the seed of the sample's random choice, so the same data give the same file.

    Example:
        >>> stats = reference_statistics({"x": [1.0, 2.0, 3.0, 4.0]}, bins=2)
        >>> stats.features[0].edges, stats.features[0].proportions
        ((2.5,), (0.5, 0.5))
    """
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 2:
        msg = f"reference statistics: bins must be a whole number of at least 2, got {bins!r}"
        raise MonitoringError(msg)
    if binning not in BINNINGS:
        msg = f"reference statistics: binning {binning!r} is not one of {BINNINGS}"
        raise MonitoringError(msg)
    if not isinstance(sample_size, int) or sample_size < 0:
        msg = f"reference statistics: sample_size must be 0 or more, got {sample_size!r}"
        raise MonitoringError(msg)
    columns = feature_columns(data, feature_names)
    rng = np.random.default_rng(seed)
    features = []
    for name, raw in columns.items():
        values = raw[np.isfinite(raw)]
        if values.size == 0:
            msg = (
                f"reference statistics, feature {name!r}: no finite numeric value in the "
                "training data; leave the feature out (feature_names=...) or encode it as numbers"
            )
            raise MonitoringError(msg)
        edges = _edges(values, bins, binning)
        if values.size <= sample_size:
            sample = np.sort(values)
        elif sample_size:
            sample = np.sort(rng.choice(values, size=sample_size, replace=False))
        else:
            sample = np.empty(0)
        features.append(
            FeatureReference(
                name=name,
                edges=tuple(float(x) for x in edges),
                proportions=tuple(float(x) for x in bin_proportions(values, edges)),
                count=int(values.size),
                missing=int(raw.size - values.size),
                mean=float(values.mean()),
                std=float(values.std(ddof=1)) if values.size > 1 else 0.0,
                min=float(values.min()),
                max=float(values.max()),
                sample=tuple(float(x) for x in sample),
            )
        )
    return ReferenceStatistics(tuple(features), binning=binning, bins=bins)


def _edges(values: FloatArray, bins: int, binning: Binning) -> FloatArray:
    low, high = float(values.min()), float(values.max())
    if low == high:
        # A constant: one bin for the value itself, so any other value shows as drift.
        return np.array([low, np.nextafter(low, math.inf)])
    if binning == "quantile":
        inner = np.quantile(values, np.arange(1, bins) / bins)
    else:
        inner = np.linspace(low, high, bins + 1)[1:-1]
    return np.unique(inner)


# -- the comparison ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftThresholds:
    """When a feature, and the whole model, count as drifting.

    ``metric`` names the value compared with the thresholds: ``"tvd_hellinger"`` (the mean of
    TVD and Hellinger, MLRun's "general drift"), or one of ``"tvd"``, ``"hellinger"``, ``"kl"``,
    ``"psi"``, ``"ks"``. A value at or above ``detected`` is "drift detected"; at or above
    ``possible``, "possible drift". ``overall`` is how the features' values combine into the
    model's: their ``"mean"`` (MLRun) or the ``"worst"`` (largest) one.
    """

    possible: float = 0.5
    detected: float = 0.7
    metric: Metric = "tvd_hellinger"
    overall: Overall = "mean"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            msg = f"drift thresholds: metric {self.metric!r} is not one of {', '.join(METRICS)}"
            raise MonitoringError(msg)
        if self.overall not in OVERALLS:
            msg = f"drift thresholds: overall {self.overall!r} is not one of {OVERALLS}"
            raise MonitoringError(msg)
        ceiling = 1.0 if self.metric in BOUNDED_METRICS else math.inf
        if not 0 < self.possible < self.detected <= ceiling:
            bound = " <= 1" if ceiling == 1.0 else ""
            msg = (
                f"drift thresholds: need 0 < possible < detected{bound} for {self.metric}, "
                f"got possible={self.possible} and detected={self.detected}"
            )
            raise MonitoringError(msg)

    @classmethod
    def for_metric(
        cls,
        metric: Metric = "tvd_hellinger",
        possible: float | None = None,
        detected: float | None = None,
        overall: Overall = "mean",
    ) -> DriftThresholds:
        """Thresholds for ``metric``, the ones not given from :data:`DEFAULT_THRESHOLDS`."""
        default = DEFAULT_THRESHOLDS.get(metric, (cls.possible, cls.detected))
        return cls(
            possible=default[0] if possible is None else possible,
            detected=default[1] if detected is None else detected,
            metric=metric,
            overall=overall,
        )

    def verdict(self, value: float | None) -> Verdict:
        """The verdict for one value of the metric (None: no data)."""
        if value is None:
            return NO_DATA
        if value >= self.detected:
            return DRIFT_DETECTED
        if value >= self.possible:
            return POSSIBLE_DRIFT
        return NO_DRIFT

    def to_dict(self) -> dict[str, Any]:
        return {
            "possible": self.possible,
            "detected": self.detected,
            "metric": self.metric,
            "overall": self.overall,
        }


@dataclass(frozen=True)
class FeatureDrift:
    """One feature: its current distribution, the statistics and the verdict."""

    name: str
    edges: tuple[float, ...]
    reference: tuple[float, ...]
    """The reference proportions per bin."""
    current: tuple[float, ...]
    """The current proportions per bin (all 0 when no current value)."""
    count: int
    """Current values used."""
    missing: int
    """Current values that were missing, not numbers, NaN or infinite."""
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    tvd: float | None
    hellinger: float | None
    kl: float | None
    psi: float | None
    ks: float | None
    ks_method: Literal["sample", "binned"]
    value: float | None
    """The thresholds' metric for this feature."""
    verdict: Verdict

    @property
    def statistics(self) -> dict[str, float | None]:
        return {
            "tvd": self.tvd,
            "hellinger": self.hellinger,
            "kl": self.kl,
            "psi": self.psi,
            "ks": self.ks,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "value": self.value,
            "statistics": self.statistics,
            "ks_method": self.ks_method,
            "current": {
                "count": self.count,
                "missing": self.missing,
                "mean": self.mean,
                "std": self.std,
                "min": self.min,
                "max": self.max,
            },
            "bins": {
                "edges": list(self.edges),
                "reference": list(self.reference),
                "current": list(self.current),
            },
        }


@dataclass(frozen=True)
class DriftResult:
    """Every feature's drift and the model's overall verdict."""

    features: tuple[FeatureDrift, ...]
    value: float | None
    """The features' values combined by ``thresholds.overall`` (None when no feature has data)."""
    verdict: Verdict
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)

    def feature(self, name: str) -> FeatureDrift:
        for feature in self.features:
            if feature.name == name:
                return feature
        msg = f"no feature {name!r} in the drift result; known: {[f.name for f in self.features]}"
        raise KeyError(msg)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "verdict": self.verdict,
            "thresholds": self.thresholds.to_dict(),
            "features": [feature.to_dict() for feature in self.features],
        }


def compare(
    reference: ReferenceStatistics,
    current: Any,
    thresholds: DriftThresholds | None = None,
    *,
    epsilon: float = EPSILON,
) -> DriftResult:
    """Compare current data with the reference, feature by feature.

    Args:
        reference: the training statistics (:func:`reference_statistics`).
        current: the live values, in any form :func:`reference_statistics` accepts; rows given
            as lists are in the reference's feature order. Features the reference does not
            know are ignored; a reference feature absent from ``current`` gets "no data".
        thresholds: the verdict's rule (default: MLRun's, see :class:`DriftThresholds`).
        epsilon: the proportion an empty bin counts as in KL and PSI.
    """
    rule = thresholds if thresholds is not None else DriftThresholds()
    columns = feature_columns(current, reference.feature_names, require_all=False)
    features = tuple(
        _feature_drift(feature, columns.get(feature.name), rule, epsilon)
        for feature in reference.features
    )
    values = [feature.value for feature in features if feature.value is not None]
    if not values:
        overall = None
    elif rule.overall == "mean":
        overall = math.fsum(values) / len(values)
    else:
        overall = max(values)
    return DriftResult(features, overall, rule.verdict(overall), rule)


def _feature_drift(
    feature: FeatureReference, raw: FloatArray | None, rule: DriftThresholds, epsilon: float
) -> FeatureDrift:
    raw = raw if raw is not None else np.empty(0)
    values = raw[np.isfinite(raw)]
    p = np.array(feature.proportions)
    q = bin_proportions(values, feature.edges)
    ks_method: Literal["sample", "binned"] = "sample" if feature.sample else "binned"
    if values.size == 0:
        return FeatureDrift(
            name=feature.name,
            edges=feature.edges,
            reference=feature.proportions,
            current=tuple(float(x) for x in q),
            count=0,
            missing=int(raw.size),
            mean=None,
            std=None,
            min=None,
            max=None,
            tvd=None,
            hellinger=None,
            kl=None,
            psi=None,
            ks=None,
            ks_method=ks_method,
            value=None,
            verdict=NO_DATA,
        )
    tvd = total_variation(p, q)
    hel = hellinger(p, q)
    stats: dict[str, float] = {
        "tvd": tvd,
        "hellinger": hel,
        "kl": kl_divergence(q, p, epsilon),
        "psi": population_stability_index(p, q, epsilon),
        "ks": ks_two_sample(feature.sample, values) if feature.sample else ks_binned(p, q),
        "tvd_hellinger": (tvd + hel) / 2,
    }
    value = stats[rule.metric]
    return FeatureDrift(
        name=feature.name,
        edges=feature.edges,
        reference=feature.proportions,
        current=tuple(float(x) for x in q),
        count=int(values.size),
        missing=int(raw.size - values.size),
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        min=float(values.min()),
        max=float(values.max()),
        tvd=stats["tvd"],
        hellinger=stats["hellinger"],
        kl=stats["kl"],
        psi=stats["psi"],
        ks=stats["ks"],
        ks_method=ks_method,
        value=value,
        verdict=rule.verdict(value),
    )


# -- data in ----------------------------------------------------------------------------------


def feature_columns(
    data: Any, feature_names: Sequence[str] | None = None, *, require_all: bool = True
) -> dict[str, FloatArray]:
    """``data`` as one float array per feature, NaN where a value is missing or not a number.

    Accepts a data frame (anything with ``columns``), a dict of name to values, a list of dicts
    (rows by name), or a 2-D array or list of lists (rows by position: column ``i`` is
    ``feature_names[i]``, default ``f<i>``). With ``require_all``, a name in ``feature_names``
    that ``data`` lacks is an error; without it, the name is left out of the answer.
    """
    names = list(feature_names) if feature_names is not None else None
    if names is not None and len(set(names)) != len(names):
        msg = f"feature names must be unique, got {names}"
        raise MonitoringError(msg)
    if isinstance(data, np.ndarray) and data.ndim == 2:
        matrix = data.astype(np.float64)
        return _positional(matrix, names)
    if hasattr(data, "columns") and not isinstance(data, np.ndarray):
        named = {str(column): data[column] for column in data.columns}
        return _select(named, names, require_all, "data frame")
    if isinstance(data, Mapping):
        return _select({str(k): v for k, v in data.items()}, names, require_all, "dict")
    rows = list(data) if isinstance(data, Iterable) and not isinstance(data, str | bytes) else None
    if rows is None:
        msg = (
            f"cannot read features from a {type(data).__name__}; give a 2-D array or list of "
            "rows, a dict of name to values, a list of dicts or a data frame"
        )
        raise MonitoringError(msg)
    if rows and all(isinstance(row, Mapping) for row in rows):
        keys = names if names is not None else list(dict.fromkeys(k for r in rows for k in r))
        named = {str(key): [row.get(key) for row in rows] for key in keys}
        if require_all and names is not None:
            absent = [key for key in names if not any(key in row for row in rows)]
            if absent:
                msg = f"the rows have no feature named {', '.join(map(repr, absent))}"
                raise MonitoringError(msg)
        return _select(named, names, False, "rows")
    return _positional(_matrix(rows, names), names)


def _positional(matrix: FloatArray, names: list[str] | None) -> dict[str, FloatArray]:
    width = matrix.shape[1]
    if names is None:
        names = [f"f{i}" for i in range(width)]
    elif len(names) != width:
        msg = (
            f"the rows have {width} columns but {len(names)} feature names were given "
            f"({', '.join(names)}); give one name per column, in order"
        )
        raise MonitoringError(msg)
    return {name: matrix[:, i] for i, name in enumerate(names)}


def _select(
    named: Mapping[str, Any], names: list[str] | None, require_all: bool, what: str
) -> dict[str, FloatArray]:
    if names is None:
        return {name: _floats(values, name) for name, values in named.items()}
    absent = [name for name in names if name not in named]
    if absent and require_all:
        msg = (
            f"the {what} has no feature named {', '.join(map(repr, absent))}; "
            f"its columns are {', '.join(map(repr, named))}"
        )
        raise MonitoringError(msg)
    return {name: _floats(named[name], name) for name in names if name in named}


def _matrix(rows: list[Any], names: list[str] | None) -> FloatArray:
    if not rows:
        return np.empty((0, len(names) if names is not None else 0))
    if all(_is_number(row) for row in rows):
        rows = [[row] for row in rows]  # a 1-D sequence: one feature
    widths = {len(row) if isinstance(row, Sequence | np.ndarray) else -1 for row in rows}
    if -1 in widths or len(widths) != 1:
        msg = (
            "the rows must all be sequences of the same length (one value per feature); "
            f"got lengths {sorted(widths)} (-1: not a sequence)"
        )
        raise MonitoringError(msg)
    try:
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    except (TypeError, ValueError):
        width = widths.pop()
        return np.array([[_float(row[i]) for i in range(width)] for row in rows], dtype=float)


def _floats(values: Any, name: str) -> FloatArray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        try:
            arr = np.array([_float(value) for value in values], dtype=np.float64)
        except TypeError:
            msg = f"feature {name!r}: expected a sequence of numbers, got {type(values).__name__}"
            raise MonitoringError(msg) from None
    if arr.ndim == 0:
        arr = arr.reshape(1)  # one row given as {name: value}
    elif arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]  # a column tensor of shape [n, 1]
    if arr.ndim != 1:
        msg = f"feature {name!r}: expected one value per row, got shape {arr.shape}"
        raise MonitoringError(msg)
    return arr


def _float(value: Any) -> float:
    return float(value) if _is_number(value) else math.nan


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating)


def _array(values: Sequence[float] | FloatArray) -> FloatArray:
    return np.asarray(values, dtype=np.float64)
