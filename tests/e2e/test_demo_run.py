"""`nudgeflow run`, the local demo: demo mode with an API token of its own, and one child dying stops
nothing else. The supervisor's rules with small real processes, then the whole demo on a broker of its own."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.cli.supervisor import Child, Supervisor
from tests.integration.conftest import KAFKA_SCRIPT, REPO, free_port

pytestmark = pytest.mark.integration


def supervise(supervisor: Supervisor, until: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not until():
        supervisor.check()
        time.sleep(0.02)


@pytest.fixture
def python_children() -> Iterator[Callable[[list[Child]], Supervisor]]:
    made: list[Supervisor] = []

    def make(children: list[Child]) -> Supervisor:
        supervisor = Supervisor(
            children,
            dict(os.environ),
            max_restarts=2,
            backoff_seconds=0.05,
            stable_seconds=60,
            prefix=[sys.executable, "-c"],
        )
        made.append(supervisor)
        supervisor.start_all()
        return supervisor

    yield make
    for supervisor in made:
        supervisor.stop_all(timeout=5)


def test_a_crashing_child_is_restarted_with_backoff_then_given_up_while_the_others_run(
    python_children: Callable[[list[Child]], Supervisor], capsys: pytest.CaptureFixture[str]
) -> None:
    crashing = Child("crashing", ["import sys; sys.exit(3)"])
    steady = Child("steady", ["import time; time.sleep(60)"])
    done = Child("done", ["pass"], restart_on_success=False)
    supervisor = python_children([crashing, steady, done])
    assert steady.process is not None
    steady_pid = steady.process.pid

    supervise(supervisor, lambda: crashing.finished)
    assert crashing.finished and crashing.failures == 3  # restarted twice, then left alone
    err = capsys.readouterr().err
    assert "crashing exited with 3; restarting it in 0.05s (restart 1 of at most 2)" in err
    assert "crashing exited with 3; restarting it in 0.1s (restart 2 of at most 2)" in err
    assert "crashing exited with 3 3 times in a row; not restarting it (the others keep running)" in err
    assert done.finished and "done exited" not in err  # finishing is not dying
    assert steady.process.poll() is None and steady.process.pid == steady_pid
    assert supervisor.running()


def test_a_child_that_ran_a_while_before_dying_is_always_restarted(
    python_children: Callable[[list[Child]], Supervisor],
) -> None:
    flaky = Child("flaky", ["import sys, time; time.sleep(0.3); sys.exit(4)"])
    supervisor = python_children([flaky])
    supervisor.stable_seconds = 0.2
    supervisor.max_restarts = 1
    pids: set[int] = set()

    def restarted_often() -> bool:
        if flaky.process is not None:
            pids.add(flaky.process.pid)
        return len(pids) >= 4

    supervise(supervisor, restarted_often)
    assert len(pids) >= 4 and not flaky.finished


class Demo:
    """`nudgeflow run` in a child process, its output collected line by line."""

    def __init__(self, environment: dict[str, str]) -> None:
        self.environment = environment
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "run", "--rate", "2", "--duration", "600"],
            env=environment,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, within: float = 120.0, after: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if found := re.search(pattern, line):
                    return found
            if self.process.poll() is not None and not self.lines[after:]:
                break
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-60:]))

    def child_pids(self) -> set[int]:
        return {int(m) for line in self.lines for m in re.findall(r"^nudgeflow: started \w+ \(pid (\d+)\)", line)}


def status(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def eventually(check: Callable[[], bool], what: str, demo: Demo, within: float = 90.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; output:\n" + "\n".join(demo.lines[-60:]))


def stop_if_ours(pid: int, data_dir: Path) -> None:
    """Kill a child the demo left behind, only if that pid still is one of this demo's processes."""
    try:
        environment = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return  # gone
    if f"NUDGEFLOW_DATA_DIR={data_dir}".encode() in environment.split(b"\0"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_the_demo_runs_closed_with_its_own_token_and_rides_out_a_worker_crash(tmp_path: Path) -> None:
    kafka_port, worker_port, sink_port = free_port(), free_port(), free_port()
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith("NUDGEFLOW_")},
        "NUDGEFLOW_KAFKA_PORT": str(kafka_port),
        "NUDGEFLOW_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "KAFKA_CONTROLLER_PORT": str(free_port()),
        "NUDGEFLOW_DATA_DIR": str(tmp_path),
        "NUDGEFLOW_PARTITIONS": "2",
        "NUDGEFLOW_WORKER_WEB_PORT": str(worker_port),
        "NUDGEFLOW_SINK_WEB_PORT": str(sink_port),
        "NUDGEFLOW_LOG_LEVEL": "warning",
    }
    demo = Demo(environment)
    try:
        token = demo.wait_for(r"API token for this run: (\S+)").group(1)
        assert len(token) >= 24
        demo.wait_for(rf"dashboard: http://127\.0\.0\.1:{sink_port}/dashboard#token={re.escape(token)}$")
        demo.wait_for(
            rf'curl -H "Authorization: Bearer {re.escape(token)}" http://127\.0\.0\.1:{worker_port}/profiles/shopper-'
        )
        worker = f"http://127.0.0.1:{worker_port}"
        sink = f"http://127.0.0.1:{sink_port}"
        # The worker asks for the token even in the demo; nobody has been seen under this id, so 404.
        eventually(lambda: status(f"{worker}/profiles/nobody", token) == 404, "the worker's API", demo)
        assert status(f"{worker}/profiles/nobody") == 401
        assert status(f"{worker}/profiles/nobody", "wrong") == 401
        eventually(lambda: status(f"{sink}/metrics") == 200, "the sink", demo)

        worker_pid = int(demo.wait_for(r"started worker \(pid (\d+)\)").group(1))
        os.kill(worker_pid, signal.SIGKILL)
        seen = len(demo.lines)
        demo.wait_for(r"nudgeflow: worker exited with -9; restarting it in 1s", within=30)
        restarted = int(demo.wait_for(r"started worker \(pid (\d+)\)", within=30, after=seen).group(1))
        assert restarted != worker_pid
        eventually(lambda: status(f"{worker}/profiles/nobody", token) == 404, "the restarted worker", demo)
        assert status(f"{sink}/metrics") == 200 and demo.process.poll() is None  # nothing else stopped

        demo.process.send_signal(signal.SIGINT)
        assert demo.process.wait(timeout=90) == 0
        demo.wait_for(r"kafka: stopped", within=10)
    finally:
        if demo.process.poll() is None:
            demo.process.send_signal(signal.SIGTERM)  # stops the demo like Ctrl-C
            try:
                demo.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                demo.process.kill()
        for pid in demo.child_pids():
            stop_if_ours(pid, tmp_path)
        kafka = {**environment, "KAFKA_PORT": str(kafka_port), "KAFKA_DATA_DIR": str(tmp_path / "kafka")}
        subprocess.run(["bash", str(KAFKA_SCRIPT), "stop"], env=kafka, capture_output=True, timeout=60)
