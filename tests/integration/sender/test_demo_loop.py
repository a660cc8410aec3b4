"""`nudgeflow run` closes the loop: within a few minutes the dashboard's API shows nudges delivered, opened,
clicked and converted, from the audience's webhooks and orders through the real collector."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson

from tests.e2e.test_demo_run import Demo, stop_if_ours
from tests.integration.conftest import KAFKA_SCRIPT, free_port


def get(url: str, token: str, timeout: float = 10) -> Any:
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return orjson.loads(response.read())


def test_the_demo_shows_delivered_open_click_and_conversion_rates(tmp_path: Path) -> None:
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
        "NUDGEFLOW_COLLECTOR_PORT": str(free_port()),
        "NUDGEFLOW_SENDER__WEB_PORT": str(free_port()),
        "NUDGEFLOW_LOG_LEVEL": "warning",
    }
    demo = Demo(environment)
    try:
        token = demo.wait_for(r"API token for this run: (\S+)").group(1)
        sink = f"http://127.0.0.1:{sink_port}"
        arms: list[dict[str, Any]] = []
        answers: list[str] = []  # each poll's outcome and time, for the failure message
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            time.sleep(5)
            asked = time.monotonic()
            try:
                # A long bound: on a loaded machine the sink answers while it writes, which is what is tested.
                arms = get(f"{sink}/api/variants", token, timeout=60)["arms"]
            except (OSError, ValueError) as error:
                answers.append(f"{error!r} after {time.monotonic() - asked:.1f} s")
                continue
            answers.append(f"{len(arms)} arms after {time.monotonic() - asked:.1f} s")
            rates = {arm["rule"]: arm for arm in arms}
            cart = rates.get("cart_abandonment", {})
            sms = rates.get("browse_abandonment", {})
            if (
                cart.get("delivered", 0) >= 5
                and cart.get("opened", 0) >= 1
                and cart.get("clicked", 0) >= 1
                and cart.get("converted", 0) >= 1
                and sms.get("delivered", 0) >= 1
            ):
                break
        else:
            raise AssertionError(
                f"the dashboard's rates did not fill in: {arms}\nanswers: {answers}\n"
                + "\n".join([line for line in demo.lines if not line.startswith("trigger ")][-60:])
            )
        cart = next(arm for arm in arms if arm["rule"] == "cart_abandonment")
        assert 0 < cart["open_rate"] <= 1 and 0 < cart["click_rate"] <= 1 and 0 < cart["conversion_rate"] <= 1
        profile = get(f"http://127.0.0.1:{worker_port}/profiles/shopper-000042", token)
        assert profile["profile"]["name"] == "Ada Lovelace"  # the README's example person exists
    finally:
        if demo.process.poll() is None:
            demo.process.send_signal(signal.SIGTERM)
            try:
                demo.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                demo.process.kill()
        for pid in demo.child_pids():
            stop_if_ours(pid, tmp_path)
        kafka = {**environment, "KAFKA_PORT": str(kafka_port), "KAFKA_DATA_DIR": str(tmp_path / "kafka")}
        subprocess.run(["bash", str(KAFKA_SCRIPT), "stop"], env=kafka, capture_output=True, timeout=60)
