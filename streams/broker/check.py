"""The start-up check of every process: reach a bootstrap server as every client will (TLS, SASL), and name
the cause at once when the broker answers but refuses the settings."""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl
import time
from collections.abc import Coroutine
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.errors import SaslAuthenticationFailed, UnsupportedSaslMechanismError
from aiokafka.protocol.admin import SaslHandShakeRequest
from aiokafka.protocol.metadata import MetadataRequest

from schemas.connections import BrokerRefused, BrokerUnavailable, aiokafka_options, bootstrap_servers, kafka_ssl_context
from schemas.settings import Settings

PROTOCOL_VARIABLE = "NUDGEFLOW_SECURITY__KAFKA_PROTOCOL"
# X509_V_ERR_HOSTNAME_MISMATCH: the certificate is trusted but names other hosts.
HOSTNAME_MISMATCH = 62


def check_broker(settings: Settings, wait_seconds: float = 60.0) -> None:
    """The start-up check of every process (through `admin_client`, which `ensure_topics` opens): connect to a
    bootstrap server as every client will (TLS, SASL) and ask for the metadata.

    The clients themselves only say "Unable to bootstrap" after their timeout and keep the reason in their
    logs, so a wrong password or CA file looked like a broker that never answered. Here a broker that answers
    but refuses the settings raises BrokerRefused at once, naming the cause; one that does not answer (still
    starting, or down) is waited for up to `wait_seconds`, then BrokerUnavailable."""
    deadline = time.monotonic() + wait_seconds
    while True:
        reasons: list[str] = []
        for server in bootstrap_servers(settings):
            try:
                _run(_probe(settings, server))
                return
            except (OSError, AioKafkaError, TimeoutError) as error:
                reasons.append(f"{server}: {error or type(error).__name__}")
        if time.monotonic() >= deadline:
            raise BrokerUnavailable(
                f"no Kafka broker answered at {settings.kafka_bootstrap} within {wait_seconds:.0f}s "
                f"({'; '.join(reasons)}); start one with `nudgeflow kafka start`"
            )
        time.sleep(0.5)


def _run(probe: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(probe)
        return
    # Called from inside an event loop (a Faust start-up signal): the probe gets a loop of its own.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, probe).result()


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return host.strip("[]"), int(port)


async def _probe(settings: Settings, server: str) -> None:
    security = settings.security
    host, port = _host_port(server)
    options = {name: value for name, value in aiokafka_options(settings).items() if name != "bootstrap_servers"}
    try:
        async with asyncio.timeout(security.kafka_timeout_seconds):
            connection = await create_conn(
                host, port, request_timeout_ms=int(security.kafka_timeout_seconds * 1000), **options
            )
            try:
                await connection.send(MetadataRequest([]))
            finally:
                connection.close()
    except ssl.SSLCertVerificationError as error:
        raise BrokerRefused(_untrusted(settings, server, error)) from None
    except SaslAuthenticationFailed as error:
        reason = str(error).split(": ", 1)[-1]  # "[Error 58] SaslAuthenticationFailed: <the broker's reason>"
        raise BrokerRefused(
            f"Kafka at {server} refused the SASL credentials of user {security.kafka_username} "
            f"({security.kafka_sasl_mechanism}): {reason}"
        ) from None
    except UnsupportedSaslMechanismError:
        offered = await _sasl_mechanisms(settings, host, port)
        raise BrokerRefused(
            f"Kafka at {server} does not offer the SASL mechanism {security.kafka_sasl_mechanism} "
            f"(it offers {', '.join(offered) or 'none'}): set NUDGEFLOW_SECURITY__KAFKA_SASL_MECHANISM"
        ) from None
    except ConnectionRefusedError:
        raise  # nothing listens (yet): waited for
    except (AioKafkaError, ConnectionError, ssl.SSLError):
        # Closed or reset before any answer: what a listener of another protocol does, which these probes tell.
        refusal = await _other_protocol(settings, server, host, port)
        if refusal is not None:
            raise BrokerRefused(refusal) from None
        raise


def _untrusted(settings: Settings, server: str, error: ssl.SSLCertVerificationError) -> str:
    security = settings.security
    if error.verify_code == HOSTNAME_MISMATCH:
        return (
            f"Kafka at {server}: the server's TLS certificate does not name {_host_port(server)[0]} "
            f"({error.verify_message}); connect by a name it holds, "
            "or set NUDGEFLOW_SECURITY__KAFKA_CHECK_HOSTNAME=false"
        )
    if security.kafka_ca_file is not None:
        trusted_by = f"NUDGEFLOW_SECURITY__KAFKA_CA_FILE ({security.kafka_ca_file})"
    else:
        trusted_by = "the system's CAs (set NUDGEFLOW_SECURITY__KAFKA_CA_FILE to the CA that signed it)"
    return f"Kafka at {server}: the server's TLS certificate is not trusted by {trusted_by}: {error.verify_message}"


async def _other_protocol(settings: Settings, server: str, host: str, port: int) -> str | None:
    """Why a listener closed on us, if it speaks another protocol than the configured one; None if it does not
    answer these probes either."""
    protocol = settings.security.kafka_protocol
    tls = protocol in ("SSL", "SASL_SSL")
    if not tls and await _speaks_tls(settings, host, port):
        return (
            f"Kafka at {server}: the listener does not speak {protocol}; it answers with TLS "
            f"(set {PROTOCOL_VARIABLE} to SSL or SASL_SSL, and NUDGEFLOW_SECURITY__KAFKA_CA_FILE)"
        )
    if tls and await _answers(settings, host, port, "PLAINTEXT"):
        return (
            f"Kafka at {server}: the listener does not speak TLS ({protocol}); it answers in plaintext "
            f"(set {PROTOCOL_VARIABLE} to PLAINTEXT or SASL_PLAINTEXT)"
        )
    if not protocol.startswith("SASL_"):
        offered = await _sasl_mechanisms(settings, host, port)
        if offered:
            return (
                f"Kafka at {server}: the listener wants SASL ({', '.join(offered)}), which {protocol} does not do "
                f"(set {PROTOCOL_VARIABLE}=SASL_{'SSL' if tls else 'PLAINTEXT'} "
                "with the SASL mechanism, user and password)"
            )
    return None


async def _speaks_tls(settings: Settings, host: str, port: int) -> bool:
    # Only to tell what the listener speaks: nothing is sent, so its certificate need not be checked.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(settings.security.kafka_timeout_seconds):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _answers(settings: Settings, host: str, port: int, protocol: str) -> bool:
    """Whether the listener answers a version lookup (which even a SASL listener answers) over `protocol`."""
    security = settings.security
    context = kafka_ssl_context(security) if protocol in ("SSL", "SASL_SSL") else None
    try:
        async with asyncio.timeout(security.kafka_timeout_seconds):
            connection = await create_conn(host, port, security_protocol=protocol, ssl_context=context)
    except (OSError, AioKafkaError, TimeoutError):
        return False
    connection.close()
    return True


async def _sasl_mechanisms(settings: Settings, host: str, port: int) -> list[str]:
    """The SASL mechanisms the listener offers (a handshake, no credentials sent); empty if it does no SASL."""
    security = settings.security
    transport = "SSL" if security.kafka_protocol in ("SSL", "SASL_SSL") else "PLAINTEXT"
    try:
        async with asyncio.timeout(security.kafka_timeout_seconds):
            connection = await create_conn(
                host, port, security_protocol=transport, ssl_context=kafka_ssl_context(security)
            )
            try:
                response = await connection.send(SaslHandShakeRequest("PLAIN"))
            finally:
                connection.close()
    except (OSError, AioKafkaError, TimeoutError):
        return []
    return [str(mechanism) for mechanism in response.enabled_mechanisms]
