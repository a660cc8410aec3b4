"""nudgeflow's Faust app under Faust's own command line: `faust -A streams.runners.faust_app worker`."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kafka import KafkaProducer

from schemas.settings import Settings
from streams.timers import utc_now
from tests.integration.conftest import REPO, settings_environment
from tests.integration.test_profiles import profile_when
from tests.integration.test_worker import event, identify, send

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("runner", ["faust"], indirect=True)
def test_faust_command_line_runs_the_worker_and_serves_its_profiles(
    settings: Settings, producer: KafkaProducer, tmp_path: Path
) -> None:
    log_path = tmp_path / "faust-cli.log"
    with log_path.open("ab") as log:
        worker = subprocess.Popen(
            [str(Path(sys.executable).with_name("faust")), "-A", "streams.runners.faust_app", "worker", "-l", "warn"],
            env=settings_environment(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        now = utc_now()
        send(producer, settings, "ada", identify("ada", now))
        for number in range(3):
            send(producer, settings, "ada", event("Product Viewed", "ada", now, product_id=f"p{number}"))
        document = profile_when(settings, "ada", lambda d: d["profile"]["event_count"] >= 3, timeout=180)
        assert document["profile"]["event_count"] in (3, 4)  # the identify may count as one
        assert worker.poll() is None, log_path.read_text(errors="replace")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
