"""The same real parts as the integration tests: a Kafka broker for the session, a pipeline per test."""

from tests.integration.conftest import broker, producer, runner, settings  # noqa: F401  (fixtures, by name)
