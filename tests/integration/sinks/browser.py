"""Headless Chromium for the dashboard tests: the page as a browser renders it, with its fetches finished."""

from __future__ import annotations

import asyncio
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


async def chromium(tmp_path: Path, *arguments: str) -> str:
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,1600",
        "--virtual-time-budget=15000",  # lets the page's fetches finish before the DOM or screenshot is taken
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")
