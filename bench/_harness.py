"""What both benchmarks share: a throw-away Kafka broker, child processes that never outlive the run, tables.

Every process a benchmark starts is registered here and stopped in a `finally`, so an error or Ctrl-C leaves
nothing running: children get their own session (the terminal's Ctrl-C reaches only the benchmark, which
then stops them in order) and SIGTERM is turned into KeyboardInterrupt so the same clean-up path runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

from schemas.settings import Settings

REPO = Path(__file__).resolve().parents[1]
KAFKA_SCRIPT = REPO / "deploy" / "kafka" / "kafka.sh"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float, alive: Child | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive.running():
            raise RuntimeError(
                f"{alive.name} exited (code {alive.process.returncode}) before listening:\n{alive.tail()}"
            )
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing answered on {LOOPBACK}:{port} within {timeout:.0f}s")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def install_signal_handlers() -> None:
    # `kill <bench pid>` must clean up like Ctrl-C does, not leave the broker and workers behind.
    signal.signal(signal.SIGTERM, _terminate)


@contextlib.contextmanager
def scratch_directory(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nudgeflow-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


class Broker:
    """A single-node KRaft broker on free loopback ports with its data in `directory`, via deploy/kafka/kafka.sh."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.bootstrap = f"{LOOPBACK}:{self.port}"
        self.environment = {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(free_port()),
            "KAFKA_DATA_DIR": str(directory),
        }

    def _kafka(self, action: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(KAFKA_SCRIPT), action], env=self.environment, capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> None:
        result = self._kafka("start", timeout=180)
        if result.returncode != 0:
            raise RuntimeError(f"the bench broker did not start:\n{result.stderr}")

    def stop(self) -> None:
        # kafka.sh stop waits up to 30 s for a clean shutdown and then kills; never leave a JVM behind.
        self._kafka("stop", timeout=60)


@contextlib.contextmanager
def running_broker(directory: Path) -> Iterator[Broker]:
    broker = Broker(directory)
    print(f"starting Kafka on {broker.bootstrap}", file=sys.stderr, flush=True)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


class Child:
    """A child process with its output in a log file; its own session keeps the terminal's Ctrl-C away."""

    def __init__(self, name: str, command: Sequence[str], environment: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                list(command),
                env=dict(environment),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                start_new_session=True,
            )
        self.peak_rss_kib = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def sample_rss(self) -> int:
        """VmHWM (the kernel's high-water mark of resident memory) in KiB; kept after the process is gone."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))
        return self.peak_rss_kib

    def stop(self, timeout: float = 30.0) -> None:
        if not self.running():
            return
        self.sample_rss()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"{self.name} did not stop within {timeout:.0f}s; killing it", file=sys.stderr)
            self.process.kill()
            self.process.wait()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def problems(self, limit: int = 5) -> tuple[int, list[str]]:
        """How many log lines look like errors, and the first few of them."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return 0, []
        markers = ("ERROR", "CRITICAL", "Traceback", "WARNING", "exception")
        found = [line for line in text if any(marker in line for marker in markers)]
        return len(found), found[:limit]


class Children:
    """Every process a benchmark started; leaving the `with` block stops them all, newest first."""

    def __init__(self) -> None:
        self.started: list[Child] = []

    def start(self, name: str, command: Sequence[str], environment: Mapping[str, str], log_path: Path) -> Child:
        child = Child(name, command, environment, log_path)
        self.started.append(child)
        return child

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for child in reversed(self.started):
            try:
                child.stop()
            except KeyboardInterrupt:
                # A second Ctrl-C during clean-up: stop waiting politely, but still stop.
                child.process.kill()


def nudgeflow_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "streams.cli", *arguments]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(value) for value in header], *[[_cell(value) for value in row] for row in rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    for number, row in enumerate(cells):
        print(
            "  ".join(
                value.ljust(width) if i == 0 else value.rjust(width)
                for i, (value, width) in enumerate(zip(row, widths, strict=True))
            )
        )
        if number == 0:
            print("  ".join("-" * width for width in widths))
    sys.stdout.flush()


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN: the figure was not measured
            return "-"
        if abs(value) < 1:
            return f"{value:.4f}"  # ratios far below 1 must not round to 0.00
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def worker_environment(settings: Settings, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a `nudgeflow worker` (or `nudgeflow sink`) child: the bench pipeline's settings, its
    own data directory and web port (as a second host would have), and any extra NUDGEFLOW_* variables."""
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "NUDGEFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "NUDGEFLOW_NAMESPACE": settings.namespace,
        "NUDGEFLOW_PARTITIONS": str(settings.partitions),
        "NUDGEFLOW_DATA_DIR": str(data_dir),
        "NUDGEFLOW_WORKER_WEB_PORT": str(free_port()),
        # Never the default 6067: a sink started with this environment must not meet one already running.
        "NUDGEFLOW_SINK_WEB_PORT": str(free_port()),
        "NUDGEFLOW_TABLE_STORE": "rocksdb",
        "NUDGEFLOW_LOG_LEVEL": "warning",
        # A benchmark is a local development run: demo mode's built-in hash secret and write key.
        "NUDGEFLOW_DEMO": "true",
        **extra,
    }
