"""The one settings object of nudgeflow, read from NUDGEFLOW_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.limits import Limits

# The development write key: accepted only in demo mode, and any other process refuses to start with it.
DEMO_WRITE_KEY = "dev-write-key"
# Keys contacts and erased people are hashed with in demo mode only; anywhere else a secret must be set.
DEMO_HASH_SECRET = "nudgeflow-demo-hash-secret"


class UnsafeSettings(ValueError):
    """Settings that would leave a process open outside demo mode; the message says what to set."""


def _read_secret(path: Path, variable: str) -> SecretStr:
    """A secret mounted as a file (as container platforms do), without the newline editors leave at its end."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"{variable} names {path}, which cannot be read: {error.strerror}") from None
    return SecretStr(text.rstrip("\r\n"))


class SecuritySettings(BaseModel):
    """How every client authenticates to Kafka and ClickHouse and protects the connection: TLS, SASL, credentials.

    Set from the environment as NUDGEFLOW_SECURITY__<NAME>, e.g. NUDGEFLOW_SECURITY__KAFKA_PROTOCOL=SASL_SSL. Every
    secret can come from a file instead (<NAME>_FILE). Secrets are SecretStr: never printed, logged or exported."""

    # A validation error would otherwise echo the values given, the password among them.
    model_config = ConfigDict(hide_input_in_errors=True)

    kafka_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Kafka security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="PLAIN", description="SASL mechanism with SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    kafka_username: str | None = Field(default=None, description="SASL user (an API key on Confluent Cloud)")
    kafka_password: SecretStr | None = Field(default=None, description="SASL password (the API secret)")
    kafka_password_file: Path | None = Field(default=None, description="file holding kafka_password instead")
    kafka_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle the brokers' certificates are checked against; unset: system CAs"
    )
    kafka_cert_file: Path | None = Field(default=None, description="PEM client certificate, for mutual TLS")
    kafka_key_file: Path | None = Field(default=None, description="PEM private key of kafka_cert_file")
    kafka_key_password: SecretStr | None = Field(default=None, description="password of an encrypted kafka_key_file")
    kafka_key_password_file: Path | None = Field(default=None, description="file holding kafka_key_password instead")
    kafka_check_hostname: bool = Field(
        default=True, description="check that the broker's certificate names the host connected to"
    )
    kafka_timeout_seconds: float = Field(
        default=30.0, gt=0, description="longest wait for a broker's answer while connecting (a wrong setting fails)"
    )
    clickhouse_user: str | None = Field(default=None, description="ClickHouse user; unset: the URL's, else default")
    clickhouse_password: SecretStr | None = Field(default=None, description="password of clickhouse_user")
    clickhouse_password_file: Path | None = Field(default=None, description="file holding clickhouse_password instead")
    clickhouse_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle an https:// clickhouse_url's certificate is checked against"
    )
    clickhouse_verify: bool = Field(
        default=True, description="check an https:// ClickHouse server's certificate and host name"
    )

    @model_validator(mode="after")
    def _secret_files(self) -> SecuritySettings:
        for name in ("kafka_password", "kafka_key_password", "clickhouse_password"):
            path = getattr(self, f"{name}_file")
            if path is None:
                continue
            variable = f"NUDGEFLOW_SECURITY__{name.upper()}"
            if getattr(self, name) is not None:
                raise ValueError(f"set {variable} or {variable}_FILE, not both")
            setattr(self, name, _read_secret(path, f"{variable}_FILE"))
        if self.kafka_protocol.startswith("SASL_") and (not self.kafka_username or self.kafka_password is None):
            raise ValueError(
                f"NUDGEFLOW_SECURITY__KAFKA_PROTOCOL={self.kafka_protocol} needs NUDGEFLOW_SECURITY__KAFKA_USERNAME "
                "and NUDGEFLOW_SECURITY__KAFKA_PASSWORD (or _FILE)"
            )
        if (self.kafka_cert_file is None) != (self.kafka_key_file is None):
            raise ValueError("mutual TLS needs both NUDGEFLOW_SECURITY__KAFKA_CERT_FILE and ..._KAFKA_KEY_FILE")
        return self


class SenderSettings(BaseModel):
    """How `nudgeflow send` delivers nudges: providers, their rate limits, retries, templates and links.

    Set from the environment as NUDGEFLOW_SENDER__<NAME>, e.g. NUDGEFLOW_SENDER__SMTP_HOST=mail.internal."""

    model_config = ConfigDict(hide_input_in_errors=True)  # as SecuritySettings: it holds the SMTP password

    email_provider: Literal["smtp", "sendgrid"] = Field(
        default="smtp", description="where email goes: an SMTP server, or SendGrid's v3 Mail Send API"
    )
    smtp_host: str = Field(default="127.0.0.1", description="SMTP server (a relay or the ESP's SMTP endpoint)")
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP port (587 for submission with STARTTLS)")
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="STARTTLS after connecting, TLS from the start (port 465), or none"
    )
    smtp_user: str | None = Field(default=None, description="SMTP login; unset sends without AUTH")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password of smtp_user")
    smtp_connections: int = Field(default=4, ge=1, le=64, description="SMTP connections kept open, one send each")
    from_email: str | None = Field(default=None, description="the From address of every email; required for email")
    from_name: str | None = Field(default=None, description="display name of the From address")
    sendgrid_api_key: SecretStr | None = Field(default=None, description="SendGrid API key (Mail Send permission)")
    sendgrid_base_url: str = Field(default="https://api.sendgrid.com", description="SendGrid API base URL")
    twilio_account_sid: str | None = Field(
        default=None,
        description="Twilio account SID; the API key is NUDGEFLOW_TWILIO_AUTH_TOKEN, which also verifies its webhooks",
    )
    twilio_from_number: str | None = Field(default=None, description="the Twilio number (E.164) SMS are sent from")
    twilio_base_url: str = Field(default="https://api.twilio.com", description="Twilio REST API base URL")
    smtp_per_second: float = Field(default=20.0, gt=0, description="emails per second through SMTP, at most")
    sendgrid_per_second: float = Field(default=50.0, gt=0, description="Mail Send requests per second, at most")
    twilio_per_second: float = Field(default=1.0, gt=0, description="SMS per second (a long code's rate is 1/s)")
    concurrency: int = Field(default=16, ge=1, le=1024, description="nudges being rendered and sent at once, at most")
    max_attempts: int = Field(default=5, ge=1, le=50, description="tries of one nudge before it is dead-lettered")
    retry_seconds: float = Field(
        default=2.0, gt=0, description="wait before the second try; doubled for each later one, at most 5 minutes"
    )
    request_timeout_seconds: float = Field(default=30.0, gt=0, description="longest wait for one provider call")
    stale_after_hours: float = Field(
        default=24.0, gt=0, description="a nudge without expires_at fired longer ago than this is dropped, not sent"
    )
    templates_dir: Path | None = Field(
        default=None, description="directory of message templates; unset means the built-in English and Chinese ones"
    )
    public_url: str | None = Field(
        default=None,
        description="the collector's public URL (https://host[:port]) for unsubscribe links and SMS status callbacks; "
        "default webhook_public_url, else http://collector_host:collector_port",
    )
    unsubscribe_days: float = Field(default=60.0, gt=0, description="how long an email's unsubscribe link works")
    web_host: str = Field(default="127.0.0.1", description="interface of the sender's /metrics and /health")
    web_port: int = Field(default=6068, ge=0, le=65535, description="port of the sender's /metrics and /health")


class Settings(BaseSettings):
    """Everything nudgeflow is configured with, read from NUDGEFLOW_* environment variables."""

    # hide_input_in_errors: an invalid setting is named, its value (perhaps a secret) not echoed.
    model_config = SettingsConfigDict(
        env_prefix="NUDGEFLOW_", extra="ignore", env_nested_delimiter="__", hide_input_in_errors=True
    )

    demo: bool = Field(
        default=False,
        description="the local demo: accepts the development write key, unsigned webhooks and a built-in hash secret",
    )

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("NUDGEFLOW_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP"),
        description="Kafka bootstrap servers, host:port[,host:port]; unset, the local broker on NUDGEFLOW_KAFKA_PORT",
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
    min_insync_replicas: int = Field(
        default=1,
        ge=1,
        description="replicas that must hold a write before it is acknowledged (acks=all); 2 with 3 replicas, "
        "so one broker can be lost without losing or refusing a write",
    )
    personal_data_retention_hours: float = Field(
        default=168.0,
        gt=0,
        description="retention of the topics that carry personal data: how long a raw copy can outlive an erasure",
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
        description="store email addresses and phone numbers in ClickHouse as written; default HMAC-SHA256 digests",
    )
    rules_file: Path | None = Field(default=None, description="YAML rules file; unset means the built-in defaults")
    runner: Literal["batched", "faust"] = Field(
        default="faust",
        description="what hosts the worker: the batched aiokafka loop, or Faust agents with Faust tables",
    )
    faust_standby_replicas: int = Field(
        default=0, ge=0, description="Faust runner: standby copies of each table partition kept by other workers"
    )
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
    recommendation_products: int = Field(
        default=50_000,
        ge=1,
        description="products whose recommendations a worker holds in memory; a record for one more is dead-lettered",
    )
    worker_web_host: str = Field(default="127.0.0.1", description="interface of the worker's HTTP API")
    worker_web_port: int = Field(default=6066, description="HTTP port of the worker (profiles, segments, metrics)")
    timer_interval_seconds: float = Field(default=0.5, gt=0, description="how often due deadlines are scanned")
    idle_after_seconds: float = Field(
        default=2.0,
        gt=0,
        description="a partition with no new events for this long follows the wall clock instead of event time",
    )
    sink_batch_size: int = Field(default=20_000, ge=1, description="rows per ClickHouse insert, at most")
    sink_batch_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="bytes of messages a sink batch holds before it is written"
    )
    sink_batch_seconds: float = Field(default=1.0, gt=0, description="longest wait before a partial batch is written")
    sink_web_host: str = Field(default="127.0.0.1", description="interface the sink's dashboard and /metrics listen on")
    sink_web_port: int = Field(default=6067, ge=0, le=65535, description="port of the sink's dashboard and /metrics")
    log_level: str = Field(default="info", description="debug, info, warning or error")
    log_format: Literal["text", "json"] = Field(
        default="text", description="log lines as text, or one JSON object per line for log collectors"
    )
    collector_host: str = Field(default="127.0.0.1", description="interface the HTTP collector listens on")
    collector_port: int = Field(default=8088, ge=0, le=65535, description="port of the HTTP collector")
    collector_ack_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        description="how long the collector waits for Kafka to acknowledge an event (acks=all) before answering "
        "503; the client retries with the same messageId, so shorter rides through a leader change sooner",
    )
    collector_write_keys: dict[str, str] = Field(
        default_factory=dict,
        description="write keys the collector accepts, each mapped to the name of its source (JSON object); "
        f"demo mode adds {DEMO_WRITE_KEY}",
    )
    api_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="bearer tokens that may read personal data and change state over HTTP (JSON list)",
    )
    hash_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key for hashed contacts and erased people; required outside demo mode",
    )
    sendgrid_public_key: str | None = Field(
        default=None,
        description="SendGrid signed event webhook verification key (PEM or base64 DER)",
    )
    sendgrid_max_age_seconds: float = Field(
        default=300.0, gt=0, description="oldest signed SendGrid post accepted, against replays"
    )
    twilio_auth_token: SecretStr | None = Field(
        default=None, description="Twilio auth token to verify X-Twilio-Signature"
    )
    webhook_public_url: str | None = Field(
        default=None,
        description="the collector's URL as Twilio calls it (https://host[:port]), for signatures behind a proxy",
    )
    allow_unsigned_webhooks: bool = Field(
        default=False,
        description="accept webhooks whose provider has no verification key set; only for the local demo",
    )
    email_double_opt_in: bool = Field(
        default=False,
        description="an email opt-in through identify waits for the click on a signed link the person is sent "
        "(template consent_confirmation); only then is the person opted in",
    )
    double_opt_in_hours: float = Field(
        default=48.0, gt=0, le=24 * 30, description="how long a double opt-in's confirmation link works"
    )
    limits: Limits = Field(default_factory=Limits, description="bounds on every input; see the limits table")
    default_phone_region: str = Field(
        default="US", description="ISO region for phone numbers written without a country code"
    )
    sender: SenderSettings = Field(
        default_factory=SenderSettings, description="delivery by `nudgeflow send`; see the sender rows of the table"
    )
    security: SecuritySettings = Field(
        default_factory=SecuritySettings,
        description="TLS, SASL and credentials of the Kafka and ClickHouse clients; see the security rows of the table",
    )

    @model_validator(mode="after")
    def _local_broker(self) -> Settings:
        # A pipeline moved to another port (`NUDGEFLOW_KAFKA_PORT` alone) talks to the broker it started there.
        if "kafka_bootstrap" not in self.model_fields_set:
            self.kafka_bootstrap = f"127.0.0.1:{self.kafka_port}"
        return self

    @model_validator(mode="after")
    def _replication(self) -> Settings:
        # More in-sync replicas than replicas would make the broker refuse every acks=all write.
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"NUDGEFLOW_MIN_INSYNC_REPLICAS={self.min_insync_replicas} exceeds "
                f"NUDGEFLOW_REPLICATION_FACTOR={self.replication_factor}: every write would be refused"
            )
        return self

    @property
    def write_keys(self) -> dict[str, str]:
        """The write keys in force: the configured ones, plus the development key in demo mode."""
        return {DEMO_WRITE_KEY: "web", **self.collector_write_keys} if self.demo else dict(self.collector_write_keys)

    @property
    def hash_key(self) -> bytes:
        """The HMAC key of hashed contacts and erased people (see `check_closed`)."""
        if self.hash_secret is not None:
            return self.hash_secret.get_secret_value().encode()
        if self.demo:
            return DEMO_HASH_SECRET.encode()
        raise UnsafeSettings("NUDGEFLOW_HASH_SECRET is not set (only NUDGEFLOW_DEMO=true has a built-in one)")

    def check_closed(self, component: str) -> None:
        """Refuse to start a process left open by development defaults outside demo mode."""
        if self.demo:
            return
        problems = []
        if self.hash_secret is None or not self.hash_secret.get_secret_value().strip():  # an empty line in an env file
            problems.append("set NUDGEFLOW_HASH_SECRET (the HMAC key of hashed contacts and erased people)")
        if component == "collector" and DEMO_WRITE_KEY in self.collector_write_keys:
            problems.append(f"remove {DEMO_WRITE_KEY} from NUDGEFLOW_COLLECTOR_WRITE_KEYS: it works only in demo mode")
        if self.allow_unsigned_webhooks and component == "collector":
            problems.append("NUDGEFLOW_ALLOW_UNSIGNED_WEBHOOKS=true is for the local demo (NUDGEFLOW_DEMO=true) only")
        if problems:
            raise UnsafeSettings(f"nudgeflow {component} will not start: " + "; ".join(problems))

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
    def deliveries_topic(self) -> str:
        """The sender's ledger: one DeliveryRecord per nudge and state, keyed by trigger_id (compacted)."""
        return self.topic("deliveries")

    @property
    def sender_public_url(self) -> str:
        """The collector's URL as recipients and providers reach it, without a trailing slash."""
        url = self.sender.public_url or self.webhook_public_url or f"http://{self.collector_host}:{self.collector_port}"
        return url.rstrip("/")

    @property
    def suppressed_topic(self) -> str:
        return self.topic("triggers.suppressed")

    @property
    def segments_topic(self) -> str:
        return self.topic("segments")

    @property
    def consents_topic(self) -> str:
        """Each change of a person's consent with its source and evidence (ConsentChange), for ClickHouse."""
        return self.topic("consents")

    @property
    def profiles_topic(self) -> str:
        """Profile snapshots, keyed by person, for ClickHouse."""
        return self.topic("profiles")

    @property
    def quarantine_topic(self) -> str:
        """States the worker could not fire, store, read or publish, with the reason (QuarantinedState)."""
        return self.topic("quarantine")

    @property
    def identity_topic(self) -> str:
        return self.topic("identity")

    @property
    def privacy_topic(self) -> str:
        """Privacy requests (erase), keyed by person: read by the worker and by the sink."""
        return self.topic("privacy")

    @property
    def clock_topic(self) -> str:
        """Ticks of the Faust runner's timer, one per partition, co-partitioned with the source topics: a
        Faust timer cannot write a table, so the agent advances each partition's time when it reads one."""
        return self.topic("clock")

    @property
    def campaigns_topic(self) -> str:
        """Campaign control messages (schedule, cancel), keyed by campaign id, compacted: every runner reads all
        of its partitions from the beginning."""
        return self.topic("campaigns")

    @property
    def scores_topic(self) -> str:
        """Each person's latest predicted scores (schemas.scores.Score), keyed by person, compacted: written by
        `nudgeflow models train`, a tombstone when the person is erased."""
        return self.topic("scores")

    @property
    def recommendations_topic(self) -> str:
        """Each product's recommended products (schemas.recommendations.Recommendation), keyed by product,
        compacted: written by `nudgeflow models train`, a tombstone when a product has none any more."""
        return self.topic("recommendations")

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
            self.consents_topic,
            self.profiles_topic,
            self.identity_topic,
            self.privacy_topic,
            self.audit_topic,
            self.quarantine_topic,
            self.deliveries_topic,
            self.clock_topic,
            self.campaigns_topic,
            self.scores_topic,
            self.recommendations_topic,
        ]
