"""HTTP: W1 and W2 served by ``servegraph serve`` against minimal Starlette baselines, with wrk.

Run: ``make bench-http`` (installs wrk from Debian's packages when it is missing).

Every mode starts its server as a process on a free localhost port, warms it up for 5 s, then
measures 15 s with ``wrk -t1 -c16 --latency`` (one client thread, 16 connections), and reads
the server's resident memory (all its processes) after the run:

- W1: the five-step flow of the core issue (``benchmarks.http_targets:w1``), against a Starlette
  app that parses the JSON body and echoes it;
- W2: an iris LogisticRegression behind a router with adaptive batching
  (``benchmarks.http_targets:w2``), OIP v2 request ``{"inputs": [{"name": "input-0", "shape":
  [1, 4], "datatype": "FP32", "data": [[5.1, 3.5, 1.4, 0.2]]}]}``, with one and two workers,
  against a Starlette app that parses the same JSON and calls the same model once per request.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (9, 7, 7, 6, 7, 12)
LUA = Path(__file__).with_name("post.lua")
W1_BODY = json.dumps({"id": 1, "x": [0.1, 0.2, 0.3, 0.4]})
ECHO_APP = "benchmarks.baseline_app:echo_app"
MODEL_APP = "benchmarks.baseline_model:model_app"
W2 = "benchmarks.http_targets:w2"
W2_BODY = json.dumps(
    {
        "inputs": [
            {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [[5.1, 3.5, 1.4, 0.2]]}
        ]
    }
)


@dataclass(frozen=True)
class Mode:
    name: str
    command: list[str]
    path: str
    body: str
    baseline: str | None = None  # the name of the mode this one is compared with


@dataclass(frozen=True)
class Result:
    mode: Mode
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    rss_mb: float


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def servegraph(target: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "servegraph", "serve", target, "--workers", str(workers)]


def starlette(app: str, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", app, "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning", "--workers", str(workers),
    ]  # fmt: skip


def modes() -> list[Mode]:
    infer = "/v2/models/iris/infer"
    echo1, model1, model2 = (
        "Starlette echo (W1 body), 1 worker",
        "Starlette iris predict, 1 worker",
        "Starlette iris predict, 2 workers",
    )
    w1 = servegraph("benchmarks.http_targets:w1", 1)
    return [
        Mode(echo1, starlette(ECHO_APP, 1), "/", W1_BODY),
        Mode("servegraph W1, 1 worker", w1, "/", W1_BODY, echo1),
        Mode(model1, starlette(MODEL_APP, 1), infer, W2_BODY),
        Mode("servegraph W2 batching, 1 worker", servegraph(W2, 1), infer, W2_BODY, model1),
        Mode(model2, starlette(MODEL_APP, 2), infer, W2_BODY),
        Mode("servegraph W2 batching, 2 workers", servegraph(W2, 2), infer, W2_BODY, model2),
    ]


def start(mode: Mode, port: int) -> subprocess.Popen[bytes]:
    command = [*mode.command, "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            message = (
                f"{mode.name} exited: {process.stderr.read().decode() if process.stderr else ''}"
            )
            raise SystemExit(message)
        try:
            answer = httpx.post(
                f"http://127.0.0.1:{port}{mode.path}",
                content=mode.body,
                headers={"content-type": "application/json"},
                timeout=2,
            )
            if answer.status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    message = f"{mode.name} did not answer within 60 s"
    raise SystemExit(message)


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(child) for child in children)
        except (FileNotFoundError, ProcessLookupError, AttributeError):
            continue
    return total / 1024


def wrk(url: str, body: str, seconds: int) -> str:
    command = ["wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", "-s", str(LUA), url]
    completed = subprocess.run(
        command, env={**os.environ, "WRK_BODY": body}, capture_output=True, text=True, check=True
    )
    return completed.stdout


def milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse(output: str) -> tuple[float, float, float, int]:
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = milliseconds(re.search(r"^\s+50%\s+(\S+)$", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = milliseconds(re.search(r"^\s+99%\s+(\S+)$", output, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    socket_errors = re.search(r"Socket errors: (.*)", output)
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return rate, p50, p99, errors


def measure(mode: Mode, warm_up: int, seconds: int) -> Result:
    port = free_port()
    process = start(mode, port)
    try:
        url = f"http://127.0.0.1:{port}{mode.path}"
        wrk(url, mode.body, warm_up)
        rate, p50, p99, errors = parse(wrk(url, mode.body, seconds))
        memory = rss_mb(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    return Result(mode, rate, p50, p99, errors, memory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--warm-up", type=int, default=5)
    parser.add_argument("--only", help="run the modes whose name contains this text")
    args = parser.parse_args()
    chosen = [mode for mode in modes() if args.only is None or args.only in mode.name]
    results: dict[str, Result] = {}
    print(f"wrk -t1 -c16, {args.warm_up} s warm-up, {args.seconds} s measured per mode")
    columns = ("req/s", "p50 ms", "p99 ms", "errors", "RSS MB", "vs baseline")
    print(f"{'mode':<38} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, WIDTHS, strict=True)))
    for mode in chosen:
        result = measure(mode, args.warm_up, args.seconds)
        results[mode.name] = result
        versus = ""
        if mode.baseline in results:
            base = results[mode.baseline]
            ratio = result.requests_per_s / base.requests_per_s
            versus = f"{ratio:.2f}x, {result.rss_mb - base.rss_mb:+.0f} MB"
        print(
            f"{mode.name:<38} {result.requests_per_s:>9,.0f} {result.p50_ms:>7.2f} "
            f"{result.p99_ms:>7.2f} {result.errors:>6} {result.rss_mb:>7.1f} {versus:>12}",
            flush=True,
        )


if __name__ == "__main__":
    main()
