"""Prediction records read back over a window, the drift check over them, its JSON and HTML
reports, the ``servegraph monitor`` command, and the HTML drawn by a real headless browser."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from servegraph.models.records import PredictionRecord
from servegraph.monitoring.drift import (
    DRIFT_DETECTED,
    NO_DATA,
    NO_DRIFT,
    DriftThresholds,
    MonitoringError,
    ReferenceStatistics,
    compare,
    reference_statistics,
)
from servegraph.monitoring.records import ParquetSink
from servegraph.monitoring.records_reader import feature_rows, read_window
from servegraph.monitoring.report import (
    CURRENT_COLOUR,
    REFERENCE_COLOUR,
    build_report,
    main_monitor,
    monitor,
    render_html,
)

NAMES = ("a", "b")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def record(
    inputs: Any,
    at: datetime,
    *,
    model: str = "m",
    version: str | None = "1",
    error: str | None = None,
    event_id: str = "e",
) -> PredictionRecord:
    return PredictionRecord(
        model=model,
        version=version,
        event_id=event_id,
        timestamp=at,
        inputs=inputs,
        outputs=[0],
        latency_ms=1.0,
        error=error,
    )


def write(root: Path, records: Sequence[PredictionRecord]) -> None:
    """Write records the way the prediction recorder does (its Parquet sink)."""
    sink = ParquetSink(root)
    sink.open()
    try:
        sink.write(records)
    finally:
        sink.close()


# -- feature rows from a record's inputs --------------------------------------------------------

NAN = float("nan")


@pytest.mark.parametrize(
    ("inputs", "rows"),
    [
        ([1, 2], [(1, 2)]),
        ([[1, 2], [3, 4]], [(1, 2), (3, 4)]),
        ([[1, None]], [(1, NAN)]),
        ({"b": 2, "a": 1, "other": 9}, [(1, 2)]),
        ({"a": 1}, [(1, NAN)]),
        ({"a": [1, 3], "b": [2, 4]}, [(1, 2), (3, 4)]),
        ({"a": [[1], [3]], "b": [[2], [4]]}, [(1, 2), (3, 4)]),
        ({"input-0": [[1, 2], [3, 4]]}, [(1, 2), (3, 4)]),
        ([{"a": 1, "b": 2}, {"a": 3, "b": 4}], [(1, 2), (3, 4)]),
        (
            [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}],
            [(1, 2), (3, 4)],
        ),
        ([{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}], [(1, 2)]),
        (
            [
                {"name": "b", "datatype": "FP32", "shape": [2, 1], "data": [[2], [4]]},
                {"name": "a", "datatype": "FP32", "shape": [2], "data": [1, 3]},
            ],
            [(1, 2), (3, 4)],
        ),
        ([True, 0], [(1, 0)]),
    ],
    ids=[
        "row",
        "rows",
        "missing-value",
        "named",
        "named-partial",
        "columns",
        "column-tensors",
        "one-2d-tensor",
        "dict-rows",
        "oip-tensor",
        "oip-1d-tensor",
        "oip-named-tensors",
        "booleans",
    ],
)
def test_feature_rows(inputs: Any, rows: list[tuple[float, ...]]) -> None:
    found = feature_rows(inputs, NAMES)
    assert found is not None
    np.testing.assert_array_equal(np.array(found, dtype=float), np.array(rows, dtype=float))


@pytest.mark.parametrize(
    "inputs",
    [
        None,
        "text",
        42,
        [],
        [1, 2, 3],  # wider than the features
        [[1, 2], [3]],
        [[[1, 2]]],  # 3-D
        {"c": 1},  # no known feature
        {"a": [1, 2], "b": [3]},  # columns of different lengths
        [{"name": "x", "shape": [3, 3], "data": [1, 2]}],  # shape and data disagree
    ],
)
def test_inputs_that_are_not_feature_rows(inputs: Any) -> None:
    assert feature_rows(inputs, NAMES) is None


# -- reading a window ---------------------------------------------------------------------------


def test_read_window_keeps_start_and_drops_end(tmp_path: Path) -> None:
    end = T0 + timedelta(hours=1)
    write(
        tmp_path,
        [
            record([[0, 0]], T0 - timedelta(microseconds=1)),
            record([[1, 1]], T0),
            record([[2, 2]], end - timedelta(microseconds=1)),
            record([[3, 3]], end),
            record([[9, 9]], T0, model="other"),
        ],
    )
    window = read_window(tmp_path, "m", T0, end, NAMES)
    assert window.rows == ((1.0, 1.0), (2.0, 2.0))
    assert (window.records, window.failed, window.skipped) == (2, 0, 0)
    assert window.versions == ("1",)


def test_read_window_over_days_versions_failures_and_bad_inputs(tmp_path: Path) -> None:
    day2 = T0 + timedelta(days=1)
    write(
        tmp_path,
        [
            record([[1, 1], [2, 2]], T0, version="1"),
            record({"a": 3, "b": 3}, T0 + timedelta(seconds=1), version="2"),
            record([[4, 4]], T0 + timedelta(seconds=2), version=None),
            record([[5, 5]], T0 + timedelta(seconds=3), error="ValueError: bad"),
            record("not features", T0 + timedelta(seconds=4)),
            record([[6, 6]], day2),
        ],
    )
    days = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert days == ["2024-05-01", "2024-05-02"]  # the recorder's layout: one directory a day
    window = read_window(tmp_path, "m", T0, T0 + timedelta(hours=1), NAMES)
    assert window.rows == ((1.0, 1.0), (2.0, 2.0), (3.0, 3.0), (4.0, 4.0))
    assert (window.records, window.failed, window.skipped, window.files) == (5, 1, 1, 1)
    assert window.versions == ("1", "2", None)
    with_failed = read_window(
        tmp_path, "m", T0, T0 + timedelta(hours=1), NAMES, include_failed=True
    )
    assert (5.0, 5.0) in with_failed.rows
    v1 = read_window(tmp_path, "m", T0, T0 + timedelta(days=2), NAMES, version="1")
    # version 1: two rows, the failed record, the unreadable one, and day 2's
    assert (v1.records, v1.rows, v1.versions) == (4, ((1.0, 1.0), (2.0, 2.0), (6.0, 6.0)), ("1",))
    both_days = read_window(tmp_path, "m", T0, T0 + timedelta(days=2), NAMES)
    assert (both_days.files, (6.0, 6.0) in both_days.rows) == (2, True)


def test_read_window_errors(tmp_path: Path) -> None:
    write(tmp_path, [record([[1, 1]], T0, model="iris")])
    with pytest.raises(
        MonitoringError, match=r"no directory .* for model 'm' .*records there: iris"
    ):
        read_window(tmp_path, "m", T0, T0 + timedelta(hours=1), NAMES)
    with pytest.raises(MonitoringError, match="start 2024-05-01T12:00:00 has no time zone"):
        read_window(tmp_path, "iris", T0.replace(tzinfo=None), T0, NAMES)
    with pytest.raises(MonitoringError, match=r"ends .* before it starts"):
        read_window(tmp_path, "iris", T0, T0, NAMES)
    (tmp_path / "iris" / "2024-05-01" / "part-broken.parquet").write_text("not parquet")
    with pytest.raises(MonitoringError, match=r"cannot read .*part-broken.parquet"):
        read_window(tmp_path, "iris", T0, T0 + timedelta(hours=1), NAMES)


# -- the check and its reports ------------------------------------------------------------------


@pytest.fixture
def drifted(tmp_path: Path) -> tuple[Path, Path]:
    """Records of model ``m`` where feature ``b`` moved by 3 standard deviations, and the
    reference statistics file of its training data."""
    rng = np.random.default_rng(21)
    reference = reference_statistics(rng.normal(size=(5000, 2)), list(NAMES))
    reference_path = reference.save(tmp_path / "reference.json")
    current = rng.normal(size=(400, 2)) + np.array([0.0, 3.0])
    records = [
        record([row.tolist()], T0 + timedelta(seconds=i), event_id=f"e{i}")
        for i, row in enumerate(current)
    ]
    root = tmp_path / "records"
    write(root, records)
    return root, reference_path


def test_monitor_writes_the_json_and_html_reports(
    drifted: tuple[Path, Path], tmp_path: Path
) -> None:
    root, reference = drifted
    report = monitor(
        root,
        "m",
        reference,
        start=T0,
        end=T0 + timedelta(hours=1),
        thresholds=DriftThresholds(overall="worst"),
        output_dir=tmp_path / "out",
    )
    assert report["model"] == "m"
    assert report["version"] == "1"  # the only version seen
    assert report["window"] == {"start": T0.isoformat(), "end": "2024-05-01T13:00:00+00:00"}
    assert (report["records"], report["failed"], report["skipped"], report["rows"]) == (
        400,
        0,
        0,
        400,
    )
    a, b = report["features"]
    assert (a["name"], a["verdict"], b["name"], b["verdict"]) == (
        "a",
        NO_DRIFT,
        "b",
        DRIFT_DETECTED,
    )
    assert report["verdict"] == DRIFT_DETECTED
    assert report["value"] == b["value"]
    assert report["verdicts"] == {
        "no drift": 1,
        "possible drift": 0,
        "drift detected": 1,
        "no data": 0,
    }
    assert report["thresholds"] == {
        "possible": 0.5,
        "detected": 0.7,
        "metric": "tvd_hellinger",
        "overall": "worst",
    }
    assert set(b["statistics"]) == {"tvd", "hellinger", "kl", "psi", "ks"}
    assert b["value"] == pytest.approx((b["statistics"]["tvd"] + b["statistics"]["hellinger"]) / 2)
    assert b["reference"]["count"] == 5000
    assert b["current"]["count"] == 400
    assert b["current"]["mean"] == pytest.approx(3.0, abs=0.2)
    assert len(b["bins"]["reference"]) == len(b["bins"]["current"]) == 10
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved == report
    page = (tmp_path / "out" / "report.html").read_text()
    assert page == render_html(report)


def test_an_empty_window_has_no_data(drifted: tuple[Path, Path]) -> None:
    root, reference = drifted
    report = monitor(root, "m", reference, start=T0 - timedelta(hours=2), end=T0)
    assert (report["records"], report["rows"], report["value"]) == (0, 0, None)
    assert report["verdict"] == NO_DATA
    assert [f["verdict"] for f in report["features"]] == [NO_DATA, NO_DATA]
    assert render_html(report).count("<svg") == 2


def test_monitor_defaults_to_the_last_hour(drifted: tuple[Path, Path]) -> None:
    root, reference = drifted
    later = T0 + timedelta(minutes=30)
    report = monitor(root, "m", ReferenceStatistics.load(reference), end=later, last="10m")
    assert report["window"]["start"] == (later - timedelta(minutes=10)).isoformat()
    assert report["records"] == 0  # the records span T0 to T0 + 400 s
    report = monitor(root, "m", reference, end=later)
    assert report["records"] == 400


class SvgParser(HTMLParser):
    """Collects each ``<svg>`` element's bars: (class, height, fill) per ``rect``."""

    def __init__(self) -> None:
        super().__init__()
        self.plots: list[list[tuple[str, int, str]]] = []
        self.inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "svg":
            self.plots.append([])
            self.inside = True
        elif tag == "rect" and self.inside and (values.get("class") or "").startswith("bar "):
            self.plots[-1].append(
                (str(values["class"]), int(str(values["height"])), str(values["fill"]))
            )

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.inside = False


def hand_report() -> dict[str, Any]:
    ones = [float(x) for x in range(1, 11)]
    stats = reference_statistics({"x": ones, "<b>&y": ones, "z": ones}, bins=4)
    current = {"x": [1.0, 2.0, 8.0, 9.0], "<b>&y": ones, "z": [11.0] * 4}
    result = compare(stats, current)
    return build_report(result, stats, model="m<1>", start=T0, end=T0 + timedelta(hours=1))


def test_the_html_has_one_plot_per_feature_with_both_distributions() -> None:
    report = hand_report()
    page = render_html(report)
    parser = SvgParser()
    parser.feed(page)
    assert len(parser.plots) == 3
    for plot in parser.plots:
        reference = [(h, fill) for kind, h, fill in plot if kind == "bar reference"]
        current = [(h, fill) for kind, h, fill in plot if kind == "bar current"]
        assert len(reference) == len(current) == 4
        assert {fill for _, fill in reference} == {REFERENCE_COLOUR}
        assert {fill for _, fill in current} == {CURRENT_COLOUR}
    # x: p = [0.3, 0.2, 0.2, 0.3], q = [0.5, 0, 0, 0.5]; the axis tops at 50 %, 210 px high
    x = parser.plots[0]
    assert [h for kind, h, _ in x if kind == "bar reference"] == [126, 84, 84, 126]
    assert [h for kind, h, _ in x if kind == "bar current"] == [210, 0, 0, 210]
    # z: everything in the top bin; the axis tops at 100 %
    z = parser.plots[2]
    assert [h for kind, h, _ in z if kind == "bar current"] == [0, 0, 0, 210]
    assert page.count('<section id="feature-') == 3
    assert "&lt;b&gt;&amp;y" in page  # names are escaped
    assert "<b>&y" not in page
    assert "m&lt;1&gt;" in page
    assert "<script" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    for verdict in (NO_DRIFT, DRIFT_DETECTED):
        assert verdict in page


def test_the_report_is_strict_json() -> None:
    report = hand_report()
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text)["features"][1]["name"] == "<b>&y"


# -- the command --------------------------------------------------------------------------------


def test_main_monitor(
    drifted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, reference = drifted
    argv = [
        "m",
        "--reference",
        str(reference),
        "--records",
        f"parquet://{root}",
        "--start",
        "2024-05-01T12:00:00",  # no time zone: UTC
        "--end",
        "2024-05-01T13:00:00Z",
    ]
    assert main_monitor([*argv, "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "model m version 1, 2024-05-01T12:00:00+00:00 to 2024-05-01T13:00:00+00:00" in out
    assert "400 records (0 failed, 0 skipped), 400 input rows" in out
    assert "  b  drift detected" in out
    assert "overall: " in out
    assert (tmp_path / "out" / "report.html").is_file()
    assert main_monitor([*argv, "--overall", "worst", "--fail-on", "detected"]) == 1
    assert main_monitor([*argv, "--fail-on", "detected"]) == 0  # the mean: 1 feature of 2
    capsys.readouterr()
    assert main_monitor([*argv, "--json", "--metric", "psi"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["thresholds"]["possible"] == 0.1
    assert report["features"][1]["value"] == report["features"][1]["statistics"]["psi"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--reference", "absent.json"], "absent.json does not exist"),
        (["--start", "yesterday"], "--start: 'yesterday' is not an ISO 8601 time"),
        (["--last", "soon"], "the monitoring window"),
        (["--possible", "0.9"], "need 0 < possible < detected <= 1"),
        (["--metric", "js"], "metric 'js' is not one of"),
    ],
)
def test_main_monitor_input_errors(
    drifted: tuple[Path, Path],
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, reference = drifted
    monkeypatch.chdir(root.parent)
    argv = ["m", "--reference", str(reference), "--records", str(root), *extra]
    assert main_monitor(argv) == 2
    assert message in capsys.readouterr().err


def test_main_monitor_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_monitor(["--help"]) == 0
    assert "--reference FILE" in capsys.readouterr().out
    assert main_monitor(["m"]) == 2  # --reference is required
    assert "--reference" in capsys.readouterr().err


# -- a real browser draws the page --------------------------------------------------------------


def read_png(path: Path) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """The RGB pixels of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    position, chunks, header = 8, [], b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0), "unsupported PNG layout"
    assert colour in (2, 6), "unsupported PNG colour type"
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    pixels = np.zeros((height, stride), dtype=np.int32)
    previous = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], np.frombuffer(raw[start + 1 : start + 1 + stride], np.uint8)
        row = line.astype(np.int32)
        if kind == 2:
            row = (row + previous) & 0xFF
        elif kind in (1, 3, 4):  # these depend on the pixel to the left: decode in order
            out = np.zeros(stride, dtype=np.int32)
            for x in range(stride):
                left = out[x - channels] if x >= channels else 0
                up = previous[x]
                upper_left = previous[x - channels] if x >= channels else 0
                if kind == 1:
                    guess = left
                elif kind == 3:
                    guess = (left + up) // 2
                else:
                    p = left + up - upper_left
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
                    guess = left if pa <= pb and pa <= pc else up if pb <= pc else upper_left
                out[x] = (row[x] + guess) & 0xFF
            row = out
        pixels[y] = row
        previous = row
    return pixels.reshape(height, width, channels)[:, :, :3].astype(np.uint8)


def bar_rows(pixels: np.ndarray[Any, Any], colour: str, width: int = 20) -> np.ndarray[Any, Any]:
    """Which rows of the image hold a run of at least ``width`` pixels of exactly ``colour``
    (``#rrggbb``): rows through a bar, not through a 12-pixel legend swatch or text."""
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    mask = np.all(pixels == rgb, axis=2).astype(np.int32)
    sums = np.cumsum(np.pad(mask, ((0, 0), (1, 0))), axis=1)
    return np.asarray(((sums[:, width:] - sums[:, :-width]) == width).any(axis=1))


def bands(rows: np.ndarray[Any, Any]) -> list[int]:
    """The lengths of the runs of consecutive true rows: one per plot, as high as its tallest
    bar (the bars of a plot share a baseline)."""
    found = np.flatnonzero(rows)
    if found.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(found) > 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [found.size - 1]])
    return [int(found[end] - found[start] + 1) for start, end in zip(starts, ends, strict=True)]


def test_a_headless_browser_draws_a_plot_per_feature(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail(
            "chromium is not on PATH: this test renders the drift report in a real headless "
            "browser; install it with `apt-get install -y chromium` (scripts/services.sh does)"
        )
    page = tmp_path / "report.html"
    page.write_text(render_html(hand_report()), encoding="utf-8")
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # as root, and in containers, Chromium's sandbox cannot start
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--force-device-scale-factor=1",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,2000",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    pixels = read_png(shot)
    assert pixels.shape[:2] == (2000, 1200)
    # One band of bars per feature in each colour, as high as that plot's tallest bar less the
    # row the x axis line covers. The axis is 210 px high; x tops at 50 % (reference 30 %:
    # 126 px, current 50 %: 210 px), the unchanged feature too, z at 100 % (reference 63 px).
    assert bands(bar_rows(pixels, REFERENCE_COLOUR)) == [125, 125, 62]
    assert bands(bar_rows(pixels, CURRENT_COLOUR)) == [209, 125, 209]
