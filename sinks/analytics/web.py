"""The sink's web server: the built-in dashboard, the JSON it draws from, and Prometheus metrics.

In embedded mode the sink owns the chDB directory, so dashboard queries have to be answered by the sink
process; the same server works unchanged in front of a ClickHouse server.

Every /api/* answer is personal data or derived from it, so each needs a bearer token of
`settings.api_tokens` (schemas.access.token_guard). The dashboard page itself is a static shell without
data: it takes the token from its URL fragment (/dashboard#token=..., which browsers never send to the
server) and sends it with every request it makes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from schemas.access import token_guard
from schemas.metrics import metrics_response
from schemas.settings import Settings
from sinks.analytics import queries
from sinks.analytics.attribution import Model
from sinks.clickhouse.metrics import SinkMetrics
from sinks.clickhouse.rows import RowOptions

# Paths anyone may load: the redirect and the dashboard's shell, neither of which carries data.
PUBLIC_PATHS = ("/", "/dashboard")


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _json(payload: Any) -> web.Response:
    body = orjson.dumps(payload, default=_plain, option=orjson.OPT_NON_STR_KEYS)
    return web.Response(body=body, content_type="application/json")


def period_from(request: web.Request, now: datetime | None = None) -> queries.Period:
    """?days=N (default 30), or ?since=&until= as ISO times: queries.Period.parse, as for the CLI."""
    query = request.query
    try:
        return queries.Period.parse(query.get("since"), query.get("until"), query.get("days"), now)
    except ValueError as error:
        raise web.HTTPBadRequest(text=f"bad period: {error}") from None


def build_web_app(client: Any, metrics: SinkMetrics, settings: Settings) -> web.Application:
    """The sink's server; `settings` gives the API tokens, the interface it listens on (/metrics is open on
    loopback only) and the key person ids are stored under."""
    options = RowOptions.of(settings)

    # clickhouse-connect calls block; they run in threads so the sink's consumer loop keeps going.
    async def answer(request: web.Request, question: Callable[[queries.Period], Any]) -> web.Response:
        period = period_from(request)
        return _json(await asyncio.to_thread(question, period))

    async def dashboard(request: web.Request) -> web.Response:
        page = resources.files("sinks.analytics").joinpath("dashboard.html").read_text()
        return web.Response(text=page, content_type="text/html")

    async def rates(request: web.Request) -> web.Response:
        return await answer(request, lambda p: queries.daily_rates(client, p))

    async def variants(request: web.Request) -> web.Response:
        def both(period: queries.Period) -> dict[str, Any]:
            report = queries.rule_report(client, period)
            return {"arms": report, "tests": queries.variant_significance(report)}

        return await answer(request, both)

    async def campaigns(request: web.Request) -> web.Response:
        def both(period: queries.Period) -> dict[str, Any]:
            report = queries.campaign_report(client, period)
            return {"arms": report, "tests": queries.campaign_significance(report)}

        return await answer(request, both)

    async def funnel(request: web.Request) -> web.Response:
        return await answer(request, lambda p: queries.funnel(client, p))

    async def suppressions(request: web.Request) -> web.Response:
        return await answer(request, lambda p: queries.suppressions(client, p))

    async def active(request: web.Request) -> web.Response:
        return await answer(request, lambda p: queries.active_people_hourly(client, p))

    async def attribution(request: web.Request) -> web.Response:
        model = request.query.get("model", Model.LAST_TOUCH.value)
        if model not in {m.value for m in Model}:
            raise web.HTTPBadRequest(text=f"model must be one of {', '.join(m.value for m in Model)}")
        return await answer(request, lambda p: queries.attribution(client, p, Model(model)))

    async def cohorts(request: web.Request) -> web.Response:
        return _json(await asyncio.to_thread(queries.cohort_lifetime_value, client))

    async def churn(request: web.Request) -> web.Response:
        return _json(await asyncio.to_thread(queries.churn_risk, client))

    async def scores(request: web.Request) -> web.Response:
        return _json(await asyncio.to_thread(queries.score_distribution, client))

    async def backtest(request: web.Request) -> web.Response:
        return _json(await asyncio.to_thread(queries.latest_backtest, client))

    async def send_times(request: web.Request) -> web.Response:
        return await answer(request, lambda p: queries.engagement_by_local_hour(client, p))

    async def person_export(request: web.Request) -> web.Response:
        person_id = request.match_info["person_id"]
        return _json(await asyncio.to_thread(queries.person_export, client, person_id, options))

    async def prometheus(request: web.Request) -> web.Response:
        return metrics_response(metrics)

    app = web.Application(
        middlewares=[token_guard(settings.api_tokens, public=PUBLIC_PATHS, listen_host=settings.sink_web_host)]
    )
    app.router.add_get("/", lambda request: _redirect())
    app.router.add_get("/dashboard", dashboard)
    app.router.add_get("/api/rates", rates)
    app.router.add_get("/api/variants", variants)
    app.router.add_get("/api/campaigns", campaigns)
    app.router.add_get("/api/funnel", funnel)
    app.router.add_get("/api/suppressions", suppressions)
    app.router.add_get("/api/active", active)
    app.router.add_get("/api/attribution", attribution)
    app.router.add_get("/api/cohorts", cohorts)
    app.router.add_get("/api/churn", churn)
    app.router.add_get("/api/scores", scores)
    app.router.add_get("/api/send-times", send_times)
    app.router.add_get("/api/backtest", backtest)
    app.router.add_get("/api/people/{person_id}/export", person_export)
    app.router.add_get("/metrics", prometheus)
    return app


async def _redirect() -> web.Response:
    raise web.HTTPFound("/dashboard")


async def start_web(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve `app` on `host` and `port`; the runner, to clean up with."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
