"""Log setup for every nudgeflow process: readable text on a terminal, one JSON object per line in a cluster.

Log collectors (Loki, Elasticsearch, Cloud Logging) index JSON lines without parsing rules, so
`NUDGEFLOW_LOG_FORMAT=json` is what the compose and Kubernetes files set.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from schemas.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Loggers of the Kafka clients: they narrate every connection at INFO; their warnings and errors still show.
CHATTY_LOGGERS = ("kafka", "aiokafka")

# Attributes every LogRecord has; anything else on a record came from `extra=` and belongs in the JSON.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def _fallback(value: object) -> str:
    # An extra field orjson cannot encode (a Path, an exception, a model) is logged as its repr, never dropped.
    return repr(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, logger, message, the `extra=` fields, and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and name not in document:
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(document, default=_fallback, option=orjson.OPT_NON_STR_KEYS).decode()


def build_handler(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """The log handler the settings ask for: JSON or text lines, on `stream` or stderr."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Route the root logger through one handler in the configured format, replacing any set up before."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(build_handler(settings, stream))
    root.setLevel(settings.log_level.upper())
    for chatty in CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
