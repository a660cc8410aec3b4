"""The same real parts as the integration tests: a Kafka broker for the session, a pipeline per test."""

from tests.integration.conftest import broker, producer, settings  # noqa: F401  (fixtures, by name)
