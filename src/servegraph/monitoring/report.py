"""Drift reports: the check over a window of prediction records, as JSON and as an HTML page.

:func:`monitor` reads a model's prediction records over a time window
(:mod:`~servegraph.monitoring.records_reader`), compares their inputs with the model's
reference statistics (:mod:`~servegraph.monitoring.drift`) and returns the JSON report (a
dict); with ``output_dir`` it also writes ``report.json`` and ``report.html`` there.

The HTML page is self-contained: inline CSS and one inline SVG plot per feature, drawn here
(no JavaScript, no network, no plotting library), with the reference and the current
proportions side by side over the same bins, and a table of the statistics and the verdict.
It is rendered from the JSON report alone, so a saved report can be drawn again
(:func:`render_html`).

:func:`main_monitor` is the ``servegraph monitor`` command. numpy and pyarrow are imported
only when a check runs, so declaring the command costs nothing.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .drift import DriftResult, DriftThresholds, ReferenceStatistics

REPORT_FORMAT = 1
"""The version of the JSON report's layout, written as ``"format"``."""

REFERENCE_COLOUR = "#4c78a8"
CURRENT_COLOUR = "#f58518"
VERDICT_COLOURS = {
    "no drift": "#2e7d32",
    "possible drift": "#b26a00",
    "drift detected": "#c62828",
    "no data": "#616161",
}
DEFAULT_LAST = "1h"
"""The window ``servegraph monitor`` checks when given no start: the last hour."""


# -- the check --------------------------------------------------------------------------------


def monitor(
    records_root: str | Path,
    model: str,
    reference: ReferenceStatistics | str | Path,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    last: timedelta | str = DEFAULT_LAST,
    version: str | None = None,
    thresholds: DriftThresholds | None = None,
    include_failed: bool = False,
    output_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Check ``model``'s inputs over a window of its prediction records for drift.

    Args:
        records_root: the Parquet records' root directory (a ``parquet://`` sink URL too).
        model: the model's name.
        reference: its reference statistics, or the path of their JSON file.
        start, end: the window ``[start, end)``, timezone-aware; ``end`` defaults to now and
            ``start`` to ``end - last``.
        last: the window's length when ``start`` is not given (a ``timedelta`` or ``"1h"``).
        version: only this version's records (default: every version).
        thresholds: the verdict's rule (default: MLRun's, see ``DriftThresholds``).
        include_failed: also use the inputs of predictions that failed.
        output_dir: when given, write ``report.json`` and ``report.html`` there.

    Returns:
        The JSON report (see :func:`build_report`).
    """
    from .drift import ReferenceStatistics, compare
    from .records_reader import read_window

    if isinstance(reference, ReferenceStatistics):
        stats = reference
    else:
        stats = ReferenceStatistics.load(reference)
    end = end if end is not None else datetime.now(UTC)
    if start is None:
        start = end - (last if isinstance(last, timedelta) else _duration(last))
    window = read_window(
        _records_root(records_root),
        model,
        start,
        end,
        stats.feature_names,
        version=version,
        include_failed=include_failed,
    )
    result = compare(stats, _rows_matrix(window.rows, len(stats.features)), thresholds)
    report = build_report(
        result,
        stats,
        model=model,
        version=version,
        start=start,
        end=end,
        records=window.records,
        failed=window.failed,
        skipped=window.skipped,
        rows=len(window.rows),
        versions=window.versions,
    )
    if output_dir is not None:
        write_report(report, output_dir)
    return report


def build_report(
    result: DriftResult,
    reference: ReferenceStatistics,
    *,
    model: str,
    version: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    records: int | None = None,
    failed: int = 0,
    skipped: int = 0,
    rows: int | None = None,
    versions: Sequence[str | None] = (),
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """The JSON report of a drift result: plain JSON types only (``None`` for "no value").

    Its keys: ``format``, ``model``, ``version`` (asked for, or the only one seen),
    ``versions`` (seen), ``window`` (``start``, ``end``, ISO 8601), ``records``, ``failed``,
    ``skipped``, ``rows``, ``generated_at``, ``binning``, ``thresholds``, ``value``,
    ``verdict``, ``verdicts`` (how many features got each), and ``features``: per feature
    ``name``, ``verdict``, ``value``, ``statistics`` (``tvd``, ``hellinger``, ``kl``, ``psi``,
    ``ks``), ``ks_method``, ``reference`` and ``current`` summaries (``count``, ``missing``,
    ``mean``, ``std``, ``min``, ``max``) and ``bins`` (``edges``, ``reference``, ``current``).
    """
    seen = list(versions)
    features = []
    for drift in result.features:
        item = drift.to_dict()
        ref = reference.feature(drift.name)
        item["reference"] = {
            "count": ref.count,
            "missing": ref.missing,
            "mean": ref.mean,
            "std": ref.std,
            "min": ref.min,
            "max": ref.max,
        }
        features.append(item)
    if rows is None:
        rows = max((drift.count + drift.missing for drift in result.features), default=0)
    counts = dict.fromkeys(VERDICT_COLOURS, 0)
    for drift in result.features:
        counts[drift.verdict] += 1
    return {
        "format": REPORT_FORMAT,
        "model": model,
        "version": version if version is not None else (seen[0] if len(seen) == 1 else None),
        "versions": seen,
        "window": {"start": _iso(start), "end": _iso(end)},
        "records": records,
        "failed": failed,
        "skipped": skipped,
        "rows": rows,
        "generated_at": _iso(generated_at or datetime.now(UTC)),
        "binning": {"kind": reference.binning, "bins": reference.bins},
        "thresholds": result.thresholds.to_dict(),
        "value": result.value,
        "verdict": result.verdict,
        "verdicts": counts,
        "features": features,
    }


def write_report(report: Mapping[str, Any], output_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` in ``output_dir`` (created if needed)."""
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "report.json"
    html_path = directory / "report.html"
    json_path.write_text(report_json(report), encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path


def report_json(report: Mapping[str, Any]) -> str:
    """The report as strict JSON text (a NaN or infinity is a bug, so it raises)."""
    return json.dumps(report, indent=1, allow_nan=False) + "\n"


# -- HTML -------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #212121; max-width: 1160px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; }
h3 { font-size: 16px; margin: 28px 0 8px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 3px 10px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f5f5f5; }
.verdict { font-weight: 600; }
svg text { font-family: system-ui, sans-serif; font-size: 11px; fill: #424242; }
section { border-top: 1px solid #e0e0e0; }
.feature { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 16px; }
""".strip()


def render_html(report: Mapping[str, Any]) -> str:
    """A self-contained HTML page for a JSON report: a summary, then per feature a plot of the
    reference and current proportions per bin and a table of its statistics."""
    model = str(report.get("model"))
    features: list[Mapping[str, Any]] = list(report.get("features", []))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Drift report: {_e(model)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Drift report: {_e(model)}</h1>",
        _summary(report),
        "<h2>Features</h2>",
        _feature_table(features),
    ]
    binning = report.get("binning") or {}
    parts.append(
        f"<p>Bins: {_e(binning.get('bins'))} {_e(binning.get('kind'))} bins of the training "
        "data, the outer two open to -&infin; and +&infin;; each plot draws the share of the "
        "values in each bin, bins at equal widths.</p>"
    )
    for index, feature in enumerate(features):
        parts.append(_feature_section(index, feature))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _summary(report: Mapping[str, Any]) -> str:
    window = report.get("window") or {}
    thresholds = report.get("thresholds") or {}
    versions = report.get("versions") or []
    rows = [
        ("Model", _e(report.get("model"))),
        ("Version", _e(report.get("version") if report.get("version") is not None else "any")),
        ("Versions seen", _e(", ".join(str(v) for v in versions) or "none")),
        ("Window", f"{_e(window.get('start'))} to {_e(window.get('end'))}"),
        (
            "Records",
            f"{_number(report.get('records'))} ({_number(report.get('failed'))} failed, "
            f"{_number(report.get('skipped'))} skipped); {_number(report.get('rows'))} input rows",
        ),
        (
            "Thresholds",
            f"{_e(thresholds.get('metric'))}: possible drift from "
            f"{_e(thresholds.get('possible'))}, drift detected from "
            f"{_e(thresholds.get('detected'))}; overall: {_e(thresholds.get('overall'))} "
            "of the features",
        ),
        ("Overall", f"{_verdict(report.get('verdict'))} ({_number(report.get('value'))})"),
        ("Generated", _e(report.get("generated_at"))),
    ]
    body = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return f'<table class="summary">{body}</table>'


_STATISTICS = (
    ("tvd", "TVD"),
    ("hellinger", "Hellinger"),
    ("kl", "KL(current || reference)"),
    ("psi", "PSI"),
    ("ks", "KS"),
)


def _feature_table(features: Sequence[Mapping[str, Any]]) -> str:
    head = "".join(f"<th>{label}</th>" for _, label in _STATISTICS)
    lines = [f"<table><tr><th>Feature</th><th>Verdict</th><th>Value</th>{head}</tr>"]
    for index, feature in enumerate(features):
        stats = feature.get("statistics") or {}
        cells = "".join(f'<td class="num">{_number(stats.get(key))}</td>' for key, _ in _STATISTICS)
        lines.append(
            f'<tr><td><a href="#feature-{index}">{_e(feature.get("name"))}</a></td>'
            f"<td>{_verdict(feature.get('verdict'))}</td>"
            f'<td class="num">{_number(feature.get("value"))}</td>{cells}</tr>'
        )
    lines.append("</table>")
    return "".join(lines)


def _feature_section(index: int, feature: Mapping[str, Any]) -> str:
    name = _e(feature.get("name"))
    stats = feature.get("statistics") or {}
    reference = feature.get("reference") or {}
    current = feature.get("current") or {}
    rows = [
        f"<tr><th>Verdict</th><td colspan='2'>{_verdict(feature.get('verdict'))} "
        f"({_number(feature.get('value'))})</td></tr>"
    ]
    for key, label in _STATISTICS:
        note = f" ({_e(feature.get('ks_method'))})" if key == "ks" else ""
        rows.append(
            f"<tr><th>{label}{note}</th><td class='num' colspan='2'>"
            f"{_number(stats.get(key))}</td></tr>"
        )
    rows.append("<tr><th></th><th>reference</th><th>current</th></tr>")
    rows.extend(
        f"<tr><th>{key}</th><td class='num'>{_number(reference.get(key))}</td>"
        f"<td class='num'>{_number(current.get(key))}</td></tr>"
        for key in ("count", "missing", "mean", "std", "min", "max")
    )
    return (
        f'<section id="feature-{index}"><h3>{name}: {_verdict(feature.get("verdict"))}</h3>'
        f'<div class="feature">{histogram_svg(feature)}'
        f'<table class="stats">{"".join(rows)}</table></div></section>'
    )


# -- the plot ---------------------------------------------------------------------------------

_WIDTH, _HEIGHT = 680, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 16, 40, 50
_MAX_LABELS = 12


def histogram_svg(feature: Mapping[str, Any]) -> str:
    """One feature's reference and current proportions per bin, as an inline SVG element.

    Bins are drawn at equal widths (the outer bins are unbounded, and quantile bins would
    otherwise be unreadable), labelled with their edges; each bar has a ``<title>`` with its
    bin and share. Bars are ``rect`` elements of class ``bar reference`` or ``bar current``.
    """
    bins = feature.get("bins") or {}
    edges = [float(x) for x in bins.get("edges", [])]
    reference = [float(x) for x in bins.get("reference", [])]
    current = [float(x) for x in bins.get("current", [])]
    count = len(reference)
    plot_w = _WIDTH - _LEFT - _RIGHT
    plot_h = _HEIGHT - _TOP - _BOTTOM
    top = _nice_ceiling(max([*reference, *current, 0.01]))
    group = plot_w / max(count, 1)
    bar = group * 0.38
    base = _TOP + plot_h
    name = _e(feature.get("name"))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        f'aria-label="{name}: reference and current proportions per bin">',
        _legend(),
    ]
    for step in range(5):  # horizontal grid lines and the y axis labels
        share = top * step / 4
        y = base - plot_h * step / 4
        out.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_WIDTH - _RIGHT}" y2="{y:.1f}" '
            'stroke="#e0e0e0" stroke-width="1"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_percent(share)}</text>'
        )
    for i in range(count):
        left = _LEFT + i * group
        label = _bin_label(edges, i)
        for offset, kind, values, colour in (
            (group * 0.1, "reference", reference, REFERENCE_COLOUR),
            (group * 0.52, "current", current, CURRENT_COLOUR),
        ):
            height = round(plot_h * values[i] / top) if i < len(values) else 0
            out.append(
                f'<rect class="bar {kind}" x="{round(left + offset)}" y="{base - height}" '
                f'width="{max(round(bar), 1)}" height="{height}" fill="{colour}" '
                f'shape-rendering="crispEdges"><title>{kind}, bin {label}: '
                f"{(values[i] if i < len(values) else 0):.1%}</title></rect>"
            )
    out.append(
        f'<line x1="{_LEFT}" y1="{base}" x2="{_WIDTH - _RIGHT}" y2="{base}" stroke="#616161"/>'
    )
    every = max(1, math.ceil((count + 1) / _MAX_LABELS))
    for i in range(count + 1):  # the bin edges under the bin boundaries
        if i % every and i != count:
            continue
        x = _LEFT + i * group
        text = "-&infin;" if i == 0 else "+&infin;" if i == count else _e(f"{edges[i - 1]:.3g}")
        out.append(
            f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" stroke="#616161"/>'
            f'<text x="{x:.1f}" y="{base + 17}" text-anchor="middle">{text}</text>'
        )
    out.append(
        f'<text x="{_LEFT + plot_w / 2:.1f}" y="{_HEIGHT - 8}" text-anchor="middle">'
        f"{name} (bin edges)</text></svg>"
    )
    return "".join(out)


def _legend() -> str:
    items = []
    for i, (label, colour) in enumerate(
        (("reference (training)", REFERENCE_COLOUR), ("current (window)", CURRENT_COLOUR))
    ):
        x = _LEFT + i * 170
        items.append(
            f'<rect x="{x}" y="10" width="12" height="12" fill="{colour}" '
            f'shape-rendering="crispEdges"/><text x="{x + 17}" y="20">{label}</text>'
        )
    return "".join(items)


def _percent(share: float) -> str:
    return f"{share:.0%}" if round(share * 100, 6).is_integer() else f"{share:.1%}"


def _bin_label(edges: Sequence[float], i: int) -> str:
    low = "-inf" if i == 0 else f"{edges[i - 1]:.4g}"
    high = "+inf" if i >= len(edges) else f"{edges[i]:.4g}"
    return _e(f"[{low}, {high})")


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value``."""
    power = 10.0 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5):
        if factor * power >= value - 1e-12:
            return min(factor * power, 1.0)
    return min(10 * power, 1.0)


def _verdict(verdict: Any) -> str:
    colour = VERDICT_COLOURS.get(str(verdict), "#212121")
    return f'<span class="verdict" style="color:{colour}">{_e(verdict)}</span>'


def _number(value: Any) -> str:
    if value is None:
        return "&mdash;"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _e(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# -- data helpers -----------------------------------------------------------------------------


def _rows_matrix(rows: Sequence[Sequence[float]], width: int) -> Any:
    import numpy as np

    if not rows:
        return np.empty((0, width))
    return np.asarray(rows, dtype=np.float64)


def _records_root(root: str | Path) -> Path:
    text = str(root)
    prefix = "parquet://"
    return Path(text[len(prefix) :]) if text.startswith(prefix) else Path(text)


def _duration(text: str) -> timedelta:
    from servegraph.state.windows import WindowError, parse_duration

    from .drift import MonitoringError

    try:
        return timedelta(seconds=parse_duration(text, what="the monitoring window"))
    except WindowError as exc:
        msg = "; ".join(problem.message for problem in exc.problems)
        raise MonitoringError(msg) from None


# -- the command ------------------------------------------------------------------------------

EXIT_OK, EXIT_DRIFT, EXIT_USAGE = 0, 1, 2


def add_monitor_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``servegraph monitor``'s arguments on ``parser``."""
    parser.add_argument("model", help="the model's name (its records are under RECORDS/MODEL)")
    parser.add_argument(
        "--reference",
        required=True,
        metavar="FILE",
        help="the model's reference statistics (JSON from reference_statistics().save())",
    )
    parser.add_argument(
        "--records",
        default="records",
        metavar="DIR",
        help="the prediction records' root directory or parquet:// sink (default: ./records)",
    )
    parser.add_argument(
        "--start", metavar="TIME", help="window start, ISO 8601 (no time zone: UTC)"
    )
    parser.add_argument("--end", metavar="TIME", help="window end, ISO 8601 (default: now)")
    parser.add_argument(
        "--last",
        default=DEFAULT_LAST,
        metavar="DURATION",
        help=f"window length when --start is not given, e.g. 10m, 1d (default: {DEFAULT_LAST})",
    )
    parser.add_argument("--version", dest="model_version", help="only this model version")
    parser.add_argument(
        "--metric",
        default="tvd_hellinger",
        help="what the thresholds apply to: tvd_hellinger (default), tvd, hellinger, kl, psi, ks",
    )
    parser.add_argument("--possible", type=float, help="possible drift threshold (default 0.5)")
    parser.add_argument("--detected", type=float, help="drift detected threshold (default 0.7)")
    parser.add_argument(
        "--overall",
        default="mean",
        choices=("mean", "worst"),
        help="how the features' values combine into the model's (default: mean)",
    )
    parser.add_argument(
        "--include-failed", action="store_true", help="also use failed predictions' inputs"
    )
    parser.add_argument(
        "--output", metavar="DIR", help="write report.json and report.html in this directory"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the JSON report instead of the summary"
    )
    parser.add_argument(
        "--fail-on",
        choices=("possible", "detected"),
        help="exit 1 when the overall verdict is at least possible drift / drift detected",
    )


def run_monitor(args: argparse.Namespace) -> int:
    """Run ``servegraph monitor`` with parsed arguments; returns the exit status."""
    from .drift import DRIFT_DETECTED, POSSIBLE_DRIFT, DriftThresholds, MonitoringError

    try:
        thresholds = DriftThresholds.for_metric(
            args.metric, args.possible, args.detected, args.overall
        )
        end = _parse_time(args.end, "--end") if args.end else datetime.now(UTC)
        start = _parse_time(args.start, "--start") if args.start else None
        report = monitor(
            args.records,
            args.model,
            args.reference,
            start=start,
            end=end,
            last=args.last,
            version=args.model_version,
            thresholds=thresholds,
            include_failed=args.include_failed,
            output_dir=args.output,
        )
    except MonitoringError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    sys.stdout.write(report_json(report) if args.json else summary_text(report))
    if args.output and not args.json:
        directory = Path(args.output)
        sys.stdout.write(f"report: {directory / 'report.json'}, {directory / 'report.html'}\n")
    failing = {"possible": (POSSIBLE_DRIFT, DRIFT_DETECTED), "detected": (DRIFT_DETECTED,)}
    if args.fail_on and report["verdict"] in failing[args.fail_on]:
        return EXIT_DRIFT
    return EXIT_OK


def main_monitor(argv: list[str]) -> int:
    """``servegraph monitor MODEL --reference FILE [...]``: the drift check from a shell.

    Exit status: 0 when the check ran (whatever its verdict, unless ``--fail-on``); 1 when
    ``--fail-on`` is given and the overall verdict reaches it; 2 for a usage or input error
    (a missing file or directory, a bad time, duration or threshold).
    """
    parser = argparse.ArgumentParser(
        prog="servegraph monitor",
        description="Check a model's recent inputs for drift against its reference statistics.",
    )
    add_monitor_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and usage errors: keep the int contract
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return run_monitor(args)


def summary_text(report: Mapping[str, Any]) -> str:
    """A few lines for a terminal: the window, one line per feature, the overall verdict."""
    window = report.get("window") or {}
    version = report.get("version")
    lines = [
        f"model {report.get('model')}"
        + (f" version {version}" if version is not None else "")
        + f", {window.get('start')} to {window.get('end')}: {report.get('records')} records "
        f"({report.get('failed')} failed, {report.get('skipped')} skipped), "
        f"{report.get('rows')} input rows"
    ]
    features = list(report.get("features", []))
    width = max((len(str(f.get("name"))) for f in features), default=0)
    for feature in features:
        value = feature.get("value")
        shown = "-" if value is None else f"{value:.4f}"
        lines.append(f"  {feature.get('name')!s:<{width}}  {feature.get('verdict'):<14}  {shown}")
    thresholds = report.get("thresholds") or {}
    value = report.get("value")
    lines.append(
        f"overall: {report.get('verdict')}"
        + (
            ""
            if value is None
            else f" ({value:.4f}, {thresholds.get('overall')} of {thresholds.get('metric')})"
        )
    )
    return "\n".join(lines) + "\n"


def _parse_time(text: str, option: str) -> datetime:
    from .drift import MonitoringError

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        msg = f"{option}: {text!r} is not an ISO 8601 time, e.g. 2024-05-01T12:00:00Z"
        raise MonitoringError(msg) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


if __name__ == "__main__":
    sys.exit(main_monitor(sys.argv[1:]))
