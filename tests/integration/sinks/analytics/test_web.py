"""The sink's web server on chDB: every /api/* endpoint needs the bearer token, the dashboard shell does not,
/metrics is open only while the server listens on loopback."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from schemas.settings import Settings
from sinks.analytics.web import build_web_app, start_web
from sinks.clickhouse.metrics import SinkMetrics
from tests.integration.conftest import API_AUTH, TEST_API_TOKEN, TEST_HASH_SECRET, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def sink_settings(chdb_path: Path) -> Settings:
    """No broker here: the web server only reads ClickHouse."""
    return Settings(
        clickhouse_path=chdb_path,
        clickhouse_database=f"t{uuid.uuid4().hex[:10]}",
        hash_secret=TEST_HASH_SECRET,
        api_tokens=[TEST_API_TOKEN],
    )


async def serving(client: Any, settings: Settings) -> tuple[web.AppRunner, str, list[str]]:
    app = build_web_app(client, SinkMetrics(), settings)
    # Every /api route the server has, so an endpoint added later is covered without touching this test.
    paths = sorted(
        {resource.canonical for resource in app.router.resources() if resource.canonical.startswith("/api/")}
    )
    port = free_port()
    runner = await start_web(app, "127.0.0.1", port)
    return runner, f"http://127.0.0.1:{port}", [path.replace("{person_id}", "ana") for path in paths]


async def test_every_api_endpoint_answers_401_without_a_valid_token_and_200_with_it(
    sink_settings: Settings, clickhouse: Any
) -> None:
    runner, url, paths = await serving(clickhouse, sink_settings)
    refusals = [
        {},
        {"Authorization": f"Bearer not-{TEST_API_TOKEN}"},
        {"Authorization": f"Basic {TEST_API_TOKEN}"},
        {"Authorization": "Bearer "},
    ]
    try:
        expected = {"/api/campaigns", "/api/people/ana/export", "/api/backtest", "/api/scores", "/api/send-times"}
        assert expected <= set(paths) and len(paths) == 13, paths
        async with aiohttp.ClientSession() as http:
            for path in paths:
                for headers in refusals:
                    async with http.get(url + path, headers=headers) as response:
                        assert response.status == 401, (path, headers)
                        assert response.headers["WWW-Authenticate"].startswith("Bearer")
                        assert "ana" not in await response.text()
                async with http.get(url + path, headers=API_AUTH) as response:
                    assert response.status == 200, (path, await response.text())
            # The dashboard is a shell without data: anyone may load it, its figures come through /api.
            async with http.get(f"{url}/dashboard") as response:
                assert response.status == 200
                page = await response.text()
            assert "Authorization" in page and "#token=" in page and "sessionStorage" in page
            async with http.get(f"{url}/", allow_redirects=False) as response:
                assert (response.status, response.headers["Location"]) == (302, "/dashboard")
            async with http.get(f"{url}/metrics") as response:
                assert response.status == 200  # open: the server listens on loopback only
    finally:
        await runner.cleanup()


async def test_metrics_need_the_token_when_the_server_listens_beyond_loopback(
    sink_settings: Settings, clickhouse: Any
) -> None:
    # Built as for 0.0.0.0; bound to loopback here only so the test opens no port to the network.
    runner, url, _ = await serving(clickhouse, sink_settings.model_copy(update={"sink_web_host": "0.0.0.0"}))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/metrics") as response:
                assert response.status == 401
            async with http.get(f"{url}/metrics", headers=API_AUTH) as response:
                assert response.status == 200
                assert "nudgeflow_sink_rows_written" in await response.text()
            async with http.get(f"{url}/dashboard") as response:
                assert response.status == 200
    finally:
        await runner.cleanup()


async def test_no_token_configured_means_no_api_at_all(sink_settings: Settings, clickhouse: Any) -> None:
    runner, url, paths = await serving(clickhouse, sink_settings.model_copy(update={"api_tokens": []}))
    try:
        async with aiohttp.ClientSession() as http:
            for path in paths:
                async with http.get(url + path, headers=API_AUTH) as response:
                    assert response.status == 401, path
    finally:
        await runner.cleanup()
