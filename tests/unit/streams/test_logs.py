"""JSON and text log lines, and the Kafka clients kept quiet at INFO."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from schemas.settings import Settings
from streams.logs import JsonFormatter, configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers; pytest's own capture handlers come back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    chatty = {name: logging.getLogger(name).level for name in ("kafka", "aiokafka")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, chatty_level in chatty.items():
        logging.getLogger(name).setLevel(chatty_level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_carry_time_level_logger_message_and_extra_fields() -> None:
    stream = io.StringIO()
    configure_logging(Settings(log_format="json"), stream)
    logging.getLogger("nudgeflow.test").warning(
        "dead letter %s", "events/3@17", extra={"partition": 3, "path": Path("a/b")}
    )
    [line] = lines(stream)
    document = orjson.loads(line)
    assert document["level"] == "warning"
    assert document["logger"] == "nudgeflow.test"
    assert document["message"] == "dead letter events/3@17"
    assert document["partition"] == 3
    assert document["path"] == repr(Path("a/b"))  # not JSON-native: kept as its repr, not dropped
    assert datetime.fromisoformat(document["timestamp"]).utcoffset() is not None
    assert not {"args", "msg", "levelno", "created", "taskName"} & set(document)


def test_a_traceback_stays_inside_its_json_line() -> None:
    record = logging.LogRecord("nudgeflow", logging.ERROR, __file__, 1, "failed", None, None)
    try:
        raise ValueError("bad offset")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    text = JsonFormatter().format(record)
    assert "\n" not in text
    assert "ValueError: bad offset" in orjson.loads(text)["exception"]


def test_text_is_the_default_format() -> None:
    stream = io.StringIO()
    configure_logging(Settings(), stream)
    logging.getLogger("nudgeflow").info("hello")
    [line] = lines(stream)
    assert line.endswith(" INFO nudgeflow: hello")


def test_kafka_clients_info_is_hidden_but_their_warnings_show() -> None:
    stream = io.StringIO()
    configure_logging(Settings(log_format="json", log_level="info"), stream)
    logging.getLogger("aiokafka.conn").info("connecting to broker 1")
    logging.getLogger("kafka.client").info("bootstrap succeeded")
    logging.getLogger("aiokafka.consumer").warning("heartbeat failed")
    assert [orjson.loads(line)["message"] for line in lines(stream)] == ["heartbeat failed"]


def test_configuring_twice_leaves_one_handler() -> None:
    stream = io.StringIO()
    configure_logging(Settings(), io.StringIO())
    configure_logging(Settings(log_format="json"), stream)
    logging.getLogger("nudgeflow").error("once")
    assert len(lines(stream)) == 1


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format="xml")  # type: ignore[arg-type]
