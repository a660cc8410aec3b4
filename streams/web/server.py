"""The worker's HTTP API: a person's live profile, a segment's members, Prometheus metrics.

A person's state lives on the worker that holds their partition. Asked about someone else's person, a
worker looks up the owner in the consumer group and redirects there (307), or answers 503 while the
group is rebalancing and nobody holds the partition.

Everything but /health needs a bearer token from `api_tokens` (schemas.access); /metrics is open only
while the worker listens on loopback. A redirect is answered only to a caller with a valid token, and
most HTTP clients drop Authorization when they follow it to another host:port, so a client re-sends the
header itself (`nudgeflow profile` does: streams.cli.http.get_json).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from kafka.errors import KafkaError

from schemas.access import token_guard
from schemas.metrics import metrics_response
from streams.broker.outbox import partition_of
from streams.runners.batched import BatchedRunner
from streams.timers import utc_now
from streams.web.documents import profile_document, segment_page
from streams.web.owners import owner_url

log = logging.getLogger(__name__)

# Liveness and readiness probes reach the pod's own address without a token; the answer names nobody.
HEALTH_PATH = "/health"


def build_api(worker: BatchedRunner) -> web.Application:
    """The worker's HTTP API: live profiles, segment members, metrics and health; a person on another
    worker's partition is redirected to the worker that holds it."""
    settings = worker.settings
    routes = web.RouteTableDef()

    @routes.get("/profiles/{person_id}")
    async def profile_view(request: web.Request) -> web.StreamResponse:
        person_id = request.match_info["person_id"]
        key = person_id.encode()
        partition = partition_of(key, settings.partitions)
        if partition not in worker.owned:
            return await _elsewhere(request, partition)
        state = worker.latest_state(partition, key)
        if state is None:
            return web.json_response({"error": f"no profile for {person_id}"}, status=404)
        if state.merged_into is not None:
            return web.json_response({"person_id": person_id, "merged_into": state.merged_into}, status=404)
        return web.json_response(profile_document(state, utc_now(), worker.rules))

    async def _elsewhere(request: web.Request, partition: int) -> web.StreamResponse:
        try:
            owner = await asyncio.to_thread(owner_url, settings, partition)
        except KafkaError as error:
            owner = None
            log.warning("cannot describe the worker group: %s", error)
        if owner is None or owner == worker.url:
            return web.json_response(
                {"error": f"partition {partition} is being handed over between workers; retry shortly"},
                status=503,
                headers={"Retry-After": "1"},
            )
        raise web.HTTPTemporaryRedirect(f"{owner}{request.path_qs}")

    @routes.get("/segments/{name}/members")
    async def segment_members(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in {segment.name for segment in worker.rules.segments}:
            return web.json_response({"error": f"no segment named {name}"}, status=404)
        try:
            limit = max(1, min(1000, int(request.query.get("limit", "100"))))
        except ValueError:
            return web.json_response({"error": "limit must be a whole number"}, status=400)
        # Each worker knows the partitions it holds; with several workers, ask each and merge.
        page = segment_page(worker.segment_members(name), request.query.get("after"), limit)
        return web.json_response({**page, "segment": name, "partitions": sorted(worker.owned)})

    @routes.get("/metrics")
    async def metrics_view(request: web.Request) -> web.StreamResponse:
        worker.metrics.pending_timers.set(len(worker.schedule))
        worker.metrics.profiles.set(worker.held_states())
        return metrics_response(worker.metrics)

    @routes.get(HEALTH_PATH)
    async def health_view(request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, "partitions": len(worker.owned)})

    guard = token_guard(settings.api_tokens, public=[HEALTH_PATH], listen_host=settings.worker_web_host)
    app = web.Application(middlewares=[guard])
    app.add_routes(routes)
    return app
