"""The CLI's HTTP client: GET JSON from a worker or sink with the API token, following owner redirects."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from schemas.settings import Settings


def _authorization(settings: Settings) -> dict[str, str]:
    """The header the CLI's HTTP calls send: the first configured API token, if any."""
    if not settings.api_tokens:
        return {}
    return {"Authorization": f"Bearer {settings.api_tokens[0].get_secret_value()}"}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx comes back as an HTTPError, and get_json follows it itself


MAX_REDIRECTS = 3


def get_json(url: str, settings: Settings, timeout: float = 10.0) -> tuple[Any, str | None]:
    """GET a JSON document: (document, None), or (None, why not) when the process is down or says no.

    Redirects (a worker sending the caller to the worker that holds the person) are followed here, with
    the token sent again: HTTP clients drop Authorization on a redirect to another host or port."""
    import orjson

    opener = urllib.request.build_opener(_NoRedirects)
    headers = _authorization(settings)
    for _ in range(MAX_REDIRECTS + 1):
        try:
            with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
                return orjson.loads(response.read()), None
        except urllib.error.HTTPError as error:
            location = error.headers.get("Location")
            if error.code in (301, 302, 303, 307, 308) and location:
                url = urllib.parse.urljoin(url, location)
                if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                    return None, f"redirected to {url}, which is not HTTP"
                continue
            hint = " (set NUDGEFLOW_API_TOKENS to a token the server accepts)" if error.code == 401 else ""
            return None, f"{url} answered {error.code}: {error.read().decode(errors='replace')[:200]}{hint}"
        except (urllib.error.URLError, OSError, ValueError) as error:
            return None, f"{url} unavailable: {error}"
    return None, f"{url}: more than {MAX_REDIRECTS} redirects"


def person_url(host: str, port: int, path: str, person_id: str) -> str:
    """The URL of `path` on a worker or sink for a person, the id quoted."""
    from urllib.parse import quote

    return f"http://{host}:{port}{path.format(quote(person_id, safe=''))}"
