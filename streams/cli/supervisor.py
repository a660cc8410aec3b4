"""The process supervisor of `nudgeflow run`: a child that dies is restarted, the others keep running."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field


@dataclass
class Child:
    """One process `nudgeflow run` keeps going: restarted when it dies, a bounded number of times."""

    name: str
    command: list[str]
    # A child that ends with exit code 0 is done (the simulator after --duration), not dead.
    restart_on_success: bool = True
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0  # deaths in a row, each without a stable run in between
    restart_at: float | None = None
    finished: bool = False  # done, or given up on


@dataclass
class Supervisor:
    """Starts the children and restarts any that dies, with backoff, leaving the others running.

    A child that stayed up for `stable_seconds` starts again with a clean slate, so one crash an hour is
    restarted forever while a crash loop is given up after `max_restarts`."""

    children: list[Child]
    environment: dict[str, str]
    max_restarts: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    stable_seconds: float = 60.0
    prefix: list[str] = field(default_factory=lambda: [sys.executable, "-m", "streams.cli"])

    def start(self, child: Child) -> None:
        child.process = subprocess.Popen([*self.prefix, *child.command], env=self.environment, start_new_session=True)
        child.started_at = time.monotonic()
        child.restart_at = None
        print(f"nudgeflow: started {child.name} (pid {child.process.pid})", flush=True)

    def start_all(self) -> None:
        for child in self.children:
            self.start(child)

    def check(self, now: float | None = None) -> None:
        """Notice children that died and restart those whose backoff has passed."""
        now = time.monotonic() if now is None else now
        for child in self.children:
            if child.finished:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self.start(child)
                continue
            if child.process is None or (code := child.process.poll()) is None:
                continue
            if code == 0 and not child.restart_on_success:
                child.finished = True
                continue
            child.failures = 1 if now - child.started_at >= self.stable_seconds else child.failures + 1
            if child.failures > self.max_restarts:
                child.finished = True
                print(
                    f"nudgeflow: {child.name} exited with {code} {child.failures} times in a row; "
                    "not restarting it (the others keep running)",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            delay = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (child.failures - 1))
            child.restart_at = now + delay
            print(
                f"nudgeflow: {child.name} exited with {code}; restarting it in {delay:g}s "
                f"(restart {child.failures} of at most {self.max_restarts})",
                file=sys.stderr,
                flush=True,
            )

    def running(self) -> bool:
        """Whether any child that is meant to keep running still does (or will be restarted)."""
        return any(child.restart_on_success and not child.finished for child in self.children)

    def stop_all(self, timeout: float = 20.0) -> None:
        live = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for process in live:
            process.send_signal(signal.SIGTERM)
        for process in live:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
