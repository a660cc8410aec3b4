"""The sink's ClickHouse client over HTTPS, as ClickHouse Cloud wants it: the server's certificate checked
against the configured CA, and the user and password (here read from a file) sent as HTTP basic
authentication, which ClickHouse's HTTP interface takes. A local TLS stand-in records what reaches it and
refuses the login the way ClickHouse does, so the test sees both the request and the operator's message."""

from __future__ import annotations

import base64
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from schemas.settings import Settings
from sinks.clickhouse.client import connect
from tests.integration.conftest import free_port
from tests.integration.security.conftest import make_certificates

USER = "shop_sink"
PASSWORD = "clickhouse-password-not-for-logs"
REFUSAL = b"Code: 516. DB::Exception: shop_sink: Authentication failed: password is incorrect. (AUTHENTICATION_FAILED)"


class StandIn(ThreadingHTTPServer):
    def __init__(self, port: int, certificates: Path) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificates / "broker.pem", certificates / "broker.key")
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.authorizations: list[str | None] = []


class Handler(BaseHTTPRequestHandler):
    server: StandIn

    def _answer(self) -> None:
        self.server.authorizations.append(self.headers.get("Authorization"))
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(403)
        self.send_header("Content-Type", "text/plain")
        self.send_header("X-ClickHouse-Exception-Code", "516")
        self.send_header("Content-Length", str(len(REFUSAL)))
        self.end_headers()
        self.wfile.write(REFUSAL)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def certificates(tmp_path: Path) -> Path:
    directory = tmp_path / "certificates"
    directory.mkdir()
    make_certificates(directory)
    return directory


@pytest.fixture
def stand_in(certificates: Path) -> Iterator[StandIn]:
    server = StandIn(free_port(), certificates)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def https_settings(tmp_path: Path, server: StandIn, ca_file: Path) -> Settings:
    password_file = tmp_path / "clickhouse-password"
    password_file.write_text(PASSWORD + "\n")
    # As the environment gives them: validated once, inside Settings, which reads the file then.
    security = {"clickhouse_user": USER, "clickhouse_password_file": password_file, "clickhouse_ca_file": ca_file}
    fields: dict[str, Any] = {"clickhouse_url": f"https://localhost:{server.server_address[1]}", "security": security}
    return Settings(data_dir=tmp_path, **fields)


def test_the_sink_s_client_sends_its_credentials_over_tls_to_a_server_its_ca_signed(
    tmp_path: Path, stand_in: StandIn, certificates: Path
) -> None:
    with pytest.raises(Exception, match="Authentication failed") as refused:
        connect(https_settings(tmp_path, stand_in, certificates / "ca.pem"))
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert stand_in.authorizations and set(stand_in.authorizations) == {expected}
    assert PASSWORD not in str(refused.value)


def test_a_server_the_ca_did_not_sign_gets_no_request(tmp_path: Path, stand_in: StandIn, certificates: Path) -> None:
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        connect(https_settings(tmp_path, stand_in, certificates / "other-ca.pem"))
    assert stand_in.authorizations == []
