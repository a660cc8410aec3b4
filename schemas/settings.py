"""The one settings object of nudgeflow, read from NUDGEFLOW_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NUDGEFLOW_", extra="ignore")

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("NUDGEFLOW_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP"),
        description="Kafka bootstrap servers, host:port[,host:port]",
    )
    kafka_port: int = Field(default=9092, description="port of the local broker started by `nudgeflow kafka`")
    namespace: str = Field(
        default="",
        description="prefix for topic names and the consumer groups, to run several pipelines on one broker",
    )
    partitions: int = Field(default=8, ge=1, description="partition count of the topics nudgeflow creates")
    replication_factor: int = Field(
        default=1, ge=1, description="replicas of every topic nudgeflow creates (3 on a three-broker cluster)"
    )
    data_dir: Path = Field(default=Path(".data"), description="local state: Kafka, RocksDB tables, chDB")
    clickhouse_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("NUDGEFLOW_CLICKHOUSE_URL", "CLICKHOUSE_URL"),
        description="HTTP URL of a ClickHouse server; unset means embedded chDB under data_dir/clickhouse",
    )
    clickhouse_database: str = Field(default="nudgeflow", description="ClickHouse database the sink writes")
    clickhouse_path: Path | None = Field(
        default=None,
        description="embedded chDB directory (one process opens it at a time); default data_dir/clickhouse",
    )
    clickhouse_plain_contacts: bool = Field(
        default=False,
        description="store email addresses and phone numbers in ClickHouse as written; default sha256 hex digests",
    )
    rules_file: Path | None = Field(default=None, description="YAML rules file; unset means the built-in defaults")
    table_store: Literal["rocksdb", "memory"] = Field(
        default="rocksdb", description="where the worker keeps its tables between batches: rocksdb or memory"
    )
    worker_linger_ms: float = Field(
        default=20.0,
        ge=0,
        description="once messages arrive, how long the worker gathers more before applying them as one batch",
    )
    worker_batch_size: int = Field(
        default=2000, ge=1, description="messages the worker applies before storing states and committing, at most"
    )
    worker_web_host: str = Field(default="127.0.0.1", description="interface of the worker's HTTP API")
    worker_web_port: int = Field(default=6066, description="HTTP port of the worker (profiles, segments, metrics)")
    timer_interval_seconds: float = Field(default=0.5, gt=0, description="how often due deadlines are scanned")
    idle_after_seconds: float = Field(
        default=2.0,
        gt=0,
        description="a partition with no new events for this long follows the wall clock instead of event time",
    )
    sink_batch_size: int = Field(default=5000, ge=1, description="rows per ClickHouse insert, at most")
    sink_batch_seconds: float = Field(default=1.0, gt=0, description="longest wait before a partial batch is written")
    sink_web_host: str = Field(default="127.0.0.1", description="interface the sink's dashboard and /metrics listen on")
    sink_web_port: int = Field(default=6067, ge=0, le=65535, description="port of the sink's dashboard and /metrics")
    log_level: str = Field(default="info", description="debug, info, warning or error")
    log_format: Literal["text", "json"] = Field(
        default="text", description="log lines as text, or one JSON object per line for log collectors"
    )
    collector_host: str = Field(default="127.0.0.1", description="interface the HTTP collector listens on")
    collector_port: int = Field(default=8088, ge=0, le=65535, description="port of the HTTP collector")
    collector_write_keys: dict[str, str] = Field(
        default_factory=lambda: {"dev-write-key": "web"},
        description="write keys the collector accepts, each mapped to the name of its source (JSON object)",
    )
    sendgrid_public_key: str | None = Field(
        default=None,
        description="SendGrid signed event webhook verification key (PEM or base64 DER); unset accepts unsigned posts",
    )
    twilio_auth_token: SecretStr | None = Field(
        default=None, description="Twilio auth token to verify X-Twilio-Signature; unset accepts unsigned posts"
    )
    default_phone_region: str = Field(
        default="US", description="ISO region for phone numbers written without a country code"
    )

    @property
    def app_id(self) -> str:
        return f"{self.namespace}-nudgeflow" if self.namespace else "nudgeflow"

    def topic(self, name: str) -> str:
        return f"{self.namespace}.{name}" if self.namespace else name

    @property
    def events_topic(self) -> str:
        return self.topic("events")

    @property
    def dead_letter_topic(self) -> str:
        return self.topic("events.dlq")

    @property
    def triggers_topic(self) -> str:
        return self.topic("triggers")

    @property
    def suppressed_topic(self) -> str:
        return self.topic("triggers.suppressed")

    @property
    def segments_topic(self) -> str:
        return self.topic("segments")

    @property
    def profiles_topic(self) -> str:
        """Profile snapshots, keyed by person, for ClickHouse."""
        return self.topic("profiles")

    @property
    def identity_topic(self) -> str:
        return self.topic("identity")

    @property
    def privacy_topic(self) -> str:
        """Privacy requests (erase), keyed by person: read by the worker and by the sink."""
        return self.topic("privacy")

    @property
    def audit_topic(self) -> str:
        """What was done about each privacy request; the person appears only as a hash."""
        return self.topic("audit")

    def changelog_topic(self, table: str) -> str:
        """The compacted topic that keeps one of the worker's tables durable."""
        return f"{self.app_id}-{table}-changelog"

    @property
    def table_changelog_topics(self) -> list[str]:
        return [self.changelog_topic(table) for table in ("persons", "erased")]

    @property
    def source_topics(self) -> list[str]:
        """Topics nudgeflow creates itself with its own partition count."""
        return [
            self.events_topic,
            self.dead_letter_topic,
            self.triggers_topic,
            self.suppressed_topic,
            self.segments_topic,
            self.profiles_topic,
            self.identity_topic,
            self.privacy_topic,
            self.audit_topic,
        ]
