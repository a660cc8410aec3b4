"""Who may read personal data or change state over HTTP: bearer tokens, compared in constant time.

Every nudgeflow web server (the worker's API, the sink's dashboard and API, the collector's metrics) uses
`token_guard`, so there is one rule: a path is open only if the server lists it as public, and /metrics
is public only while the server listens on a loopback interface.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Collection, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import SecretStr

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
METRICS_PATH = "/metrics"


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def token_allowed(presented: str | None, tokens: Sequence[SecretStr]) -> bool:
    """Whether the presented token is one of `tokens`; every token is compared, each in constant time."""
    if not presented:
        return False
    offered = presented.encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(offered, token.get_secret_value().encode())
    return matched


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only: `localhost` or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_guard(
    tokens: Sequence[SecretStr], public: Collection[str], listen_host: str, public_prefixes: Sequence[str] = ()
) -> Middleware:
    """An aiohttp middleware: 401 without a valid bearer token, except on the public paths and under the
    public prefixes (and on /metrics while the server listens on loopback only, where Prometheus on the
    same host scrapes it)."""
    open_paths = {*public, METRICS_PATH} if is_loopback(listen_host) else set(public)
    open_prefixes = tuple(public_prefixes)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths or request.path.startswith(open_prefixes) or request.method == "OPTIONS":
            return await handler(request)
        if not token_allowed(bearer_token(request.headers.get("Authorization")), tokens):
            return web.json_response(
                {"success": False, "error": "missing or invalid bearer token (Authorization: Bearer <token>)"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="nudgeflow"'},
            )
        return await handler(request)

    return guard
