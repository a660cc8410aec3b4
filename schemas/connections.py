"""The one place a Kafka or ClickHouse client's connection options are built from the settings.

Every client nudgeflow opens -- aiokafka consumers and producers, kafka-python's admin, consumer and producer,
Faust's broker, clickhouse-connect -- takes its address, TLS and credentials from these functions, so a
managed Kafka (SASL over TLS) or ClickHouse Cloud (HTTPS with a password) is configured once, in
`Settings.security`. It lives in schemas/ because both streams/ and sinks/ build clients.
"""

from __future__ import annotations

import ssl
from typing import Any

from schemas.settings import SecuritySettings, Settings


class BrokerUnavailable(RuntimeError):
    """No Kafka broker answered in time. Here, not beside the check (streams/broker/topics.py), so the command line can
    catch it without importing a Kafka client."""


class BrokerRefused(BrokerUnavailable):
    """A broker answered but refused these settings (credentials, certificate, protocol): waiting cannot help."""


def kafka_ssl_context(security: SecuritySettings) -> ssl.SSLContext | None:
    """The TLS context of SSL and SASL_SSL: the CA bundle (else the system's), a client certificate for mutual
    TLS, host name checking unless turned off; None for the plaintext protocols."""
    if security.kafka_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=str(security.kafka_ca_file) if security.kafka_ca_file else None)
    context.check_hostname = security.kafka_check_hostname
    if security.kafka_cert_file is not None and security.kafka_key_file is not None:
        password = security.kafka_key_password.get_secret_value() if security.kafka_key_password else None
        context.load_cert_chain(str(security.kafka_cert_file), str(security.kafka_key_file), password=password)
    return context


def _kafka_security(settings: Settings) -> dict[str, Any]:
    # aiokafka and kafka-python share these option names.
    security = settings.security
    options: dict[str, Any] = {"security_protocol": security.kafka_protocol}
    context = kafka_ssl_context(security)
    if context is not None:
        options["ssl_context"] = context
    if security.kafka_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = security.kafka_sasl_mechanism
        options["sasl_plain_username"] = security.kafka_username
        options["sasl_plain_password"] = security.kafka_password.get_secret_value() if security.kafka_password else None
    return options


def bootstrap_servers(settings: Settings) -> list[str]:
    """The Kafka bootstrap servers of the settings, one host:port each."""
    return [server.strip() for server in settings.kafka_bootstrap.split(",") if server.strip()]


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of every AIOKafkaConsumer and AIOKafkaProducer: the brokers, TLS and SASL."""
    return {"bootstrap_servers": bootstrap_servers(settings), **_kafka_security(settings)}


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of every kafka-python KafkaAdminClient, KafkaConsumer and KafkaProducer.

    Bounded waits: a broker that will not talk (wrong protocol, refused handshake) fails the client's
    start within the timeout instead of leaving it retrying."""
    timeout_ms = int(settings.security.kafka_timeout_seconds * 1000)
    return {
        "bootstrap_servers": bootstrap_servers(settings),
        "bootstrap_timeout_ms": timeout_ms,
        **_kafka_security(settings),
    }


def faust_broker_options(settings: Settings) -> dict[str, Any]:
    """Faust's `broker` and `broker_credentials`, which Faust hands to its aiokafka clients."""
    import faust  # only the Faust runner needs Faust

    security = settings.security
    options: dict[str, Any] = {"broker": [f"kafka://{server}" for server in bootstrap_servers(settings)]}
    context = kafka_ssl_context(security)
    if security.kafka_protocol.startswith("SASL_"):
        options["broker_credentials"] = faust.SASLCredentials(
            username=security.kafka_username,
            password=security.kafka_password.get_secret_value() if security.kafka_password else None,
            ssl_context=context,
            mechanism=security.kafka_sasl_mechanism,
        )
    elif context is not None:
        options["broker_credentials"] = faust.SSLCredentials(context)
    return options


def clickhouse_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of clickhouse_connect.get_client for a ClickHouse server (`clickhouse_url` set):
    the URL, the user and password, and for https:// URLs the CA bundle and certificate checking."""
    if not settings.clickhouse_url:
        raise ValueError("clickhouse_options is for a ClickHouse server: set NUDGEFLOW_CLICKHOUSE_URL")
    security = settings.security
    options: dict[str, Any] = {"dsn": settings.clickhouse_url}
    if security.clickhouse_user is not None:
        options["username"] = security.clickhouse_user
    if security.clickhouse_password is not None:
        options["password"] = security.clickhouse_password.get_secret_value()
    # clickhouse-connect takes the host, port and credentials from the DSN but not its scheme: it guesses TLS
    # from the port (8443, 443), so https on any other port would go out in plaintext. The scheme decides.
    secure = settings.clickhouse_url.lower().startswith("https://")
    options["interface"] = "https" if secure else "http"
    if secure:
        options["verify"] = security.clickhouse_verify
        if security.clickhouse_ca_file is not None:
            options["ca_cert"] = str(security.clickhouse_ca_file)
    return options
