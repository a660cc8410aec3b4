"""The Trust issue's adversarial suite: the whole pipeline, run as an operator runs it, under hostile input.

A worker, a sink and a collector run as child processes on the test's own namespace. Thirty shoppers whose
reminders are known in advance (a 3s cart reminder, cancelled by an order of the same cart) go through the
collector's single calls, its batches and straight onto Kafka, interleaved with thousands of hostile inputs:
through the collector's HTTP API and webhooks, and produced straight onto the events, identity and privacy
topics. Then:

- no process exits and no HTTP answer is a 5xx;
- every good reminder is published exactly once (by trigger_id), nobody else gets one;
- every hostile input is accounted for: refused at the door (a 4xx, or listed as rejected in the answer
  of a batch or webhook) and a dead letter with a reason when the collector decoded it; a dead letter with
  a reason for every message produced straight onto a topic (matched by partition and offset); a valid
  event produced under another key is re-published under its person's key;
- the good shoppers' events and reminders are in ClickHouse exactly once, hostile events are not;
- a person who identified forty times with new traits each time keeps a bounded profile and is nudged.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

import orjson
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pydantic import SecretStr

from schemas.settings import Settings
from schemas.triggers import DeadLetter, Suppression, Trigger
from streams.collector import twilio
from tests.integration.conftest import API_AUTH, WorkerProcess, free_port
from tests.integration.hostile import (
    Service,
    collector_service,
    generate_sendgrid_key,
    group_caught_up,
    nested_raw,
    nested_value,
    pipeline_environment,
    reason_prefix,
    sendgrid_headers,
    sink_service,
    wait_for_http,
)
from tests.integration.test_worker import with_rules

pytestmark = pytest.mark.integration

WRITE_KEY = "adversarial-write-key"
TWILIO_TOKEN = "adversarial-twilio-token"
SHOPPERS = 30
GROWER_IDENTIFIES = 40
SEED = 4242
KINDS = ("abandoner", "buyer", "two_carts", "repeat", "other_order")
GOOD_PATHS = ("collector", "batch", "kafka")

DEPTH = "nested deeper than 32 levels"
LONG_ID = "30000 characters; at most 256"
FUTURE = "after the time it was received"
PAST = "is before 2000-01-01"
RESERVED = "ids starting with 'contact:' are reserved"
MALFORMED = "malformed JSON"

Refusal = Literal["status", "listed", "none"]
Action = Callable[[], None]


def iso(moment: datetime) -> str:
    return moment.isoformat()


def now() -> datetime:
    return datetime.now(UTC)


def as_sent(request: Any) -> Any:
    """requests' auth hook that leaves the request as built: the session's write key is not added."""
    return request


@dataclass
class Input:
    """One hostile input and what became of it."""

    n: int
    category: str
    path: str
    marker: str
    expect: str | None  # what its refusal (or dead letter) must say; None: any reason
    refusal: Refusal  # "status": a 4xx answer; "listed": among the rejected entries of the answer; "none"
    dead_letter: bool  # a dead letter is due for it
    person: str | None = None  # the person it names, when it reached the events topic as a readable event
    status: int | None = None
    answer: str | None = None  # the collector's error, or the reason its entry was rejected for
    position: tuple[str, int, int] | None = None  # (topic, partition, offset) when produced straight to Kafka
    rekeyed: tuple[bytes, bytes] | None = None  # (key, value) the worker must re-publish it under
    rekey_seen: bool = False
    letters: list[DeadLetter] = field(default_factory=list)

    @property
    def http(self) -> bool:
        return self.path.startswith("/")

    def verdict(self) -> str | None:
        """None when accounted for, else what is wrong."""
        if self.http:
            if self.status is None:
                return "never answered"
            if self.status == 0:
                return f"no HTTP answer: {self.answer}"
            if self.status >= 500:
                return f"answered {self.status}: {self.answer}"
            if self.refusal == "status" and not 400 <= self.status < 500:
                return f"answered {self.status}, not refused"
            if self.refusal == "listed" and self.answer is None:
                return f"answered {self.status} without listing it among the rejected entries"
            if self.refusal == "none" and self.status != 200:
                return f"answered {self.status}; a webhook is acknowledged with 200"
        if self.dead_letter and not self.letters:
            return "no dead letter"
        if self.rekeyed is not None and not self.rekey_seen:
            return "not re-published under its person's key"
        if any(not letter.reason.strip() for letter in self.letters):
            return "a dead letter without a reason"
        said = self.answer if self.answer is not None else " | ".join(letter.reason for letter in self.letters)
        if self.expect is not None and self.expect not in said:
            return f"says {said[:240]!r}; expected {self.expect!r}"
        if self.dead_letter and self.answer is not None and all(ltr.reason != self.answer for ltr in self.letters):
            return f"dead letter says {self.letters[0].reason[:160]!r}, the answer {self.answer[:160]!r}"
        return None


@dataclass
class Shopper:
    index: int
    person: str
    kind: str
    path: str
    email: str
    message_ids: list[str] = field(default_factory=list)
    carts: set[str] = field(default_factory=set)  # carts whose reminder is due


class Adversary:
    """Builds and sends the hostile inputs and the good workload, and keeps what the pipeline answered."""

    def __init__(
        self,
        settings: Settings,
        producer: KafkaProducer,
        collector_url: str,
        sendgrid_key: ec.EllipticCurvePrivateKey,
        services: list[Service | WorkerProcess],
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.url = collector_url
        self.sendgrid_key = sendgrid_key
        self.services = services
        self.run = uuid.uuid4().hex[:8]
        self.rng = random.Random(SEED)
        self.session = requests.Session()
        self.headers = {"Content-Type": "application/json"}
        self.session.auth = (WRITE_KEY, "")
        self.inputs: list[Input] = []
        self.shoppers: list[Shopper] = []
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.server_errors: list[str] = []
        self.no_answer: list[str] = []
        self.good_problems: list[str] = []
        self.futures: list[tuple[Input, Any]] = []
        self.crashes: dict[str, int | None] = {}
        self.previous = ""

    # --- bookkeeping --------------------------------------------------------------------------------------

    def new(self, category: str, path: str, expect: str | None, refusal: Refusal, dead_letter: bool = True) -> Input:
        n = len(self.inputs)
        hostile = Input(n, category, path, f"adv{self.run}n{n:05d}z", expect, refusal, dead_letter)
        self.inputs.append(hostile)
        return hostile

    @property
    def marker_pattern(self) -> re.Pattern[str]:
        return re.compile(rf"adv{self.run}n(\d{{5}})z")

    def person(self, hostile: Input) -> str:
        return f"h-{self.run}-{hostile.n}"

    def check_alive(self) -> None:
        for service in self.services:
            name = getattr(service, "name", "worker")
            if name not in self.crashes and not service.alive():
                process = service.process
                self.crashes[name] = None if process is None else process.poll()

    def post(
        self,
        path: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        auth: Any = None,
        url: str | None = None,
        what: str = "",
    ) -> tuple[int, dict[str, Any]]:
        route = path.split("?", 1)[0]
        previous, self.previous = self.previous, f"{route} {what}".strip()
        try:
            response = self.session.post(
                url or f"{self.url}{path}",
                data=body,
                headers=headers if headers is not None else self.headers,
                auth=auth,
                timeout=60,
            )
        except requests.RequestException as error:
            # Which request went before on the session's connection: the one whose answer left it broken.
            self.no_answer.append(f"{route} (after {previous}): {type(error).__name__}: {str(error)[:160]}")
            return 0, {"error": f"{type(error).__name__}: {str(error)[:200]}"}
        status = response.status_code
        self.statuses[(route, status)] += 1
        if status >= 500:
            self.server_errors.append(f"{route}: {status} {response.text[:300]}")
        try:
            document = response.json()
        except ValueError:
            document = {"error": response.text[:2000]}
        return status, document if isinstance(document, dict) else {"error": str(document)[:2000]}

    # --- documents ----------------------------------------------------------------------------------------

    def document(self, hostile: Input, kind: str = "track", **fields: Any) -> dict[str, Any]:
        """A call that would be fine but for what `fields` put in it; its marker in adv_marker and messageId."""
        base: dict[str, Any] = {
            "adv_marker": hostile.marker,
            "type": kind,
            "userId": self.person(hostile),
            "messageId": hostile.marker,
            "timestamp": iso(now()),
        }
        if kind == "track":
            base["event"] = "Hostile Probe"
            base["properties"] = {"product_id": f"p{hostile.n}"}
        base.update(fields)
        return base

    def raw(self, hostile: Input, section: str, inner: bytes, kind: str = "track") -> bytes:
        """A call whose `section` is the raw JSON `inner` (nesting, numbers orjson would not write)."""
        head = self.document(hostile, kind)
        head.pop("properties", None)
        head.pop(section, None)
        return orjson.dumps(head)[:-1] + b',"' + section.encode() + b'":' + inner + b"}"

    # --- HTTP: single calls -------------------------------------------------------------------------------

    def single(
        self,
        actions: list[Action],
        category: str,
        path: str,
        expect: str | None,
        dead_letter: bool,
        build: Callable[[Input], bytes],
        times: int,
        headers: dict[str, str] | None = None,
        auth: Any = None,
    ) -> None:
        for _ in range(times):
            hostile = self.new(category, path, expect, "status", dead_letter)

            def act(hostile: Input = hostile) -> None:
                status, answer = self.post(path, build(hostile), headers=headers, auth=auth, what=category)
                hostile.status, hostile.answer = status, str(answer.get("error"))

            actions.append(act)

    def single_calls(self) -> list[Action]:
        actions: list[Action] = []
        s = self.single
        doc = self.document
        dumps = orjson.dumps
        for levels, times in ((33, 25), (253, 25), (254, 25), (300, 25)):
            s(
                actions,
                f"nesting {levels}",
                "/v1/identify",
                DEPTH,
                True,
                lambda h, n=levels: self.raw(h, "traits", nested_raw(n - 1), "identify"),
                times,
            )
            s(
                actions,
                f"nesting {levels}",
                "/v1/track",
                DEPTH,
                True,
                lambda h, n=levels: self.raw(h, "properties", nested_raw(n - 1)),
                8,
            )
        s(
            actions,
            "nesting 5000",
            "/v1/identify",
            MALFORMED,
            False,
            lambda h: self.raw(h, "traits", nested_raw(4999), "identify"),
            15,
        )
        s(
            actions,
            "nesting 5000",
            "/v1/track",
            MALFORMED,
            False,
            lambda h: self.raw(h, "properties", nested_raw(4999)),
            5,
        )
        s(
            actions,
            "context.traits nesting 300",
            "/v1/identify",
            DEPTH,
            True,
            lambda h: self.raw(h, "context", b'{"traits":' + nested_raw(298) + b"}", "identify"),
            6,
        )
        long_id = "u" * 30_000
        s(
            actions,
            "id 30000 chars",
            "/v1/track",
            f"userId: {LONG_ID}",
            True,
            lambda h: dumps(doc(h, userId=long_id)),
            12,
        )
        s(
            actions,
            "id 30000 chars",
            "/v1/track",
            f"anonymousId: {LONG_ID}",
            True,
            lambda h: dumps(doc(h, anonymousId=long_id)),
            8,
        )
        s(
            actions,
            "id 30000 chars",
            "/v1/track",
            f"messageId: {LONG_ID}",
            True,
            lambda h: dumps(doc(h, messageId=long_id)),
            8,
        )
        s(
            actions,
            "id 30000 chars",
            "/v1/track",
            f"properties.product_id: {LONG_ID}",
            True,
            lambda h: dumps(doc(h, event="Product Viewed", properties={"product_id": long_id})),
            8,
        )
        s(
            actions,
            "id 30000 chars",
            "/v1/alias",
            f"previousId: {LONG_ID}",
            True,
            lambda h: dumps(doc(h, "alias", previousId=long_id)),
            4,
        )
        s(
            actions,
            "string over 2048 chars",
            "/v1/track",
            "properties.name: 2049 characters; at most 2048",
            True,
            lambda h: dumps(doc(h, properties={"product_id": "p", "name": "n" * 2049})),
            15,
        )
        s(
            actions,
            "string over 2048 chars",
            "/v1/track",
            "100000 characters; at most 2048",
            True,
            lambda h: dumps(doc(h, properties={"product_id": "p", "name": "n" * 100_000})),
            5,
        )
        s(
            actions,
            "string over 2048 chars",
            "/v1/identify",
            "traits.bio: 50000 characters",
            True,
            lambda h: dumps(doc(h, "identify", traits={"bio": "b" * 50_000})),
            5,
        )
        s(
            actions,
            "string over 2048 chars",
            "/v1/track",
            "context.page.url: 5000 characters",
            True,
            lambda h: dumps(doc(h, context={"page": {"url": "https://x/" + "u" * 4990}})),
            5,
        )
        wide = {f"k{k}": "v" * 1800 for k in range(20)}
        s(
            actions,
            "event over 32 KiB",
            "/v1/track",
            "bytes are accepted per event",
            False,
            lambda h: dumps(doc(h, properties={"product_id": "p", **wide})),
            10,
        )
        s(
            actions,
            "body over 500 KiB",
            "/v1/track",
            "more than 512000 bytes",
            False,
            lambda h: dumps(doc(h, properties={"product_id": "p", "pad": "x" * 600_000})),
            4,
        )
        many = [{"product_id": f"p{k}"} for k in range(10_000)]
        s(
            actions,
            "10000 products",
            "/v1/track",
            "properties.products: 10000 items; at most 256",
            True,
            lambda h: dumps(doc(h, event="Cart Viewed", properties={"products": many})),
            8,
        )
        s(
            actions,
            "300 products",
            "/v1/track",
            "properties.products: 300 items; at most 256",
            True,
            lambda h: dumps(doc(h, event="Cart Viewed", properties={"products": many[:300]})),
            8,
        )
        for category, number, expect, dead_letter, times in (
            ("NaN", b"NaN", "NaN and Infinity are not JSON numbers", False, 15),
            ("Infinity", b"Infinity", "NaN and Infinity are not JSON numbers", False, 8),
            ("Infinity", b"-Infinity", "NaN and Infinity are not JSON numbers", False, 7),
            ("1e400", b"1e400", "number is infinity", False, 15),
            ("1e400", b"-1e400", "number is infinity", False, 5),
            ("2**70", str(2**70).encode(), "outside ±1e+12", True, 15),
            ("2**64-1", str(2**64 - 1).encode(), "outside ±1e+12", True, 8),
            ("1e300", b"-1e300", "outside ±1e+12", True, 7),
        ):
            s(
                actions,
                f"number {category}",
                "/v1/track",
                expect,
                dead_letter,
                lambda h, v=number: self.raw(h, "properties", b'{"product_id":"p","v":' + v + b"}"),
                times,
            )
        for category, text, times in (
            ("invalid UTF-8 \\xff", b"u\xff", 15),
            ("invalid UTF-8 overlong", b"\xc0\xaf", 5),
            ("invalid UTF-8 surrogate", b"\xed\xa0\x80", 5),
            ("lone surrogate escape", b"\\ud800", 5),
        ):
            s(
                actions,
                category,
                "/v1/track",
                MALFORMED,
                False,
                lambda h, t=text: self.raw(h, "properties", b'{"product_id":"' + t + b'"}'),
                times,
            )
        year_ahead = iso(now() + timedelta(days=365))
        for category, stamp, expect, times in (
            ("timestamp year 1", "0001-01-01T00:00:00Z", PAST, 12),
            ("timestamp year 1 +01:00", "0001-01-01T00:00:00+01:00", "timestamp", 6),
            ("timestamp 1970", "1970-01-01T00:00:00Z", PAST, 12),
            ("timestamp 9999", "9999-12-31T23:59:59Z", FUTURE, 12),
            ("timestamp a year ahead", year_ahead, FUTURE, 12),
            ("timestamp not a date", "yesterday at noon", "timestamp", 6),
        ):
            s(actions, category, "/v1/track", expect, True, lambda h, t=stamp: dumps(doc(h, timestamp=t)), times)
        s(
            actions,
            "contact: id",
            "/v1/track",
            f"userId: {RESERVED}",
            True,
            lambda h: dumps(doc(h, userId=f"contact:email:{h.n:064x}")),
            12,
        )
        s(
            actions,
            "contact: id",
            "/v1/identify",
            f"anonymousId: {RESERVED}",
            True,
            lambda h: dumps({**doc(h, "identify", anonymousId="contact:phone:0123"), "userId": None}),
            6,
        )
        s(
            actions,
            "contact: id",
            "/v1/alias",
            f"previousId: {RESERVED}",
            True,
            lambda h: dumps(doc(h, "alias", previousId="contact:email:0123")),
            6,
        )
        s(
            actions,
            "too many entries",
            "/v1/identify",
            "traits: 200 traits; at most 128",
            True,
            lambda h: dumps(doc(h, "identify", traits={f"t{k}": k for k in range(200)})),
            8,
        )
        s(
            actions,
            "too many entries",
            "/v1/track",
            "properties: 300 properties; at most 128",
            True,
            lambda h: dumps(doc(h, properties={f"p{k}": k for k in range(300)})),
            8,
        )
        s(
            actions,
            "too many entries",
            "/v1/track",
            "properties.extra: 300 keys; at most 256",
            True,
            lambda h: dumps(doc(h, properties={"product_id": "p", "extra": {f"k{k}": k for k in range(300)}})),
            8,
        )
        s(actions, "write key", "/v1/track", "missing write key", False, lambda h: dumps(doc(h)), 12, auth=("", ""))
        s(
            actions,
            "write key",
            "/v1/track",
            "unknown write key",
            False,
            lambda h: dumps(doc(h)),
            12,
            auth=("not-a-key", ""),
        )
        s(
            actions,
            "write key",
            "/v1/identify",
            "missing write key",
            False,
            lambda h: dumps(doc(h, "identify")),
            6,
            headers={**self.headers, "Authorization": "Basic !!!not-base64!!!"},
            auth=as_sent,
        )
        s(
            actions,
            "bad gzip",
            "/v1/track",
            "cannot read the body",
            False,
            lambda h: b"not gzip " + dumps(doc(h)),
            8,
            headers={**self.headers, "Content-Encoding": "gzip"},
        )
        s(actions, "empty body", "/v1/track", "empty body", False, lambda h: b"", 8)
        s(actions, "empty body", "/v1/identify", "empty body", False, lambda h: b" \n\t ", 4)
        s(
            actions,
            "not an object",
            "/v1/track",
            "an event must be a JSON object, not an array",
            True,
            lambda h: dumps([doc(h)]),
            8,
        )
        s(
            actions,
            "not an object",
            "/v1/track",
            "an event must be a JSON object, not a string",
            True,
            lambda h: dumps(h.marker),
            4,
        )
        s(
            actions,
            "invalid event",
            "/v1/track",
            "product_id",
            True,
            lambda h: dumps(doc(h, event="Product Added", properties={"cart_id": "c", "price": 3.0})),
            12,
        )
        s(
            actions,
            "invalid event",
            "/v1/track",
            "a track event needs an event name",
            True,
            lambda h: dumps(doc(h, event="")),
            6,
        )
        s(
            actions,
            "invalid event",
            "/v1/track",
            "an event needs userId or anonymousId",
            True,
            lambda h: dumps({**doc(h), "userId": None}),
            6,
        )
        s(
            actions,
            "invalid event",
            "/v1/track",
            "revenue",
            True,
            lambda h: dumps(doc(h, event="Order Completed", properties={"order_id": "o", "revenue": -5})),
            6,
        )
        s(
            actions,
            "invalid event",
            "/v1/track",
            "quantity",
            True,
            lambda h: dumps(doc(h, event="Product Added", properties={"product_id": "p", "quantity": 0})),
            6,
        )
        return actions

    # --- HTTP: batches ------------------------------------------------------------------------------------

    def batch_entry(self, hostile: Input, shape: str) -> bytes:
        doc, dumps = self.document, orjson.dumps
        shapes: dict[str, Callable[[], bytes]] = {
            "nesting 33": lambda: self.raw(hostile, "traits", nested_raw(32), "identify"),
            "nesting 254": lambda: self.raw(hostile, "traits", nested_raw(253), "identify"),
            "nesting 300": lambda: self.raw(hostile, "traits", nested_raw(299), "identify"),
            "nesting 1000": lambda: self.raw(hostile, "traits", nested_raw(999), "identify"),
            "id 30000 chars": lambda: dumps(doc(hostile, userId="u" * 30_000)),
            "anonymousId 30000 chars": lambda: dumps({**doc(hostile, anonymousId="a" * 30_000), "userId": None}),
            "string over 2048 chars": lambda: dumps(doc(hostile, properties={"product_id": "p", "name": "n" * 2049})),
            "event over 32 KiB": lambda: dumps(doc(hostile, properties={f"k{k}": "v" * 1800 for k in range(20)})),
            "number 2**70": lambda: self.raw(hostile, "properties", b'{"v":' + str(2**70).encode() + b"}"),
            "timestamp 1970": lambda: dumps(doc(hostile, timestamp="1970-01-01T00:00:00Z")),
            "timestamp 9999": lambda: dumps(doc(hostile, timestamp="9999-12-31T23:59:59Z")),
            "timestamp a year ahead": lambda: dumps(doc(hostile, timestamp=iso(now() + timedelta(days=366)))),
            "contact: id": lambda: dumps(doc(hostile, userId="contact:email:" + "0" * 64)),
            "type missing": lambda: dumps({k: v for k, v in doc(hostile).items() if k != "type"}),
            "not an object (string)": lambda: dumps(hostile.marker),
            "not an object (array)": lambda: dumps([hostile.marker]),
            "invalid event": lambda: dumps(doc(hostile, event="Product Added", properties={"cart_id": "c"})),
        }
        return shapes[shape]()

    BATCH_SHAPES: dict[str, str] = {
        "nesting 33": DEPTH,
        "nesting 254": DEPTH,
        "nesting 300": DEPTH,
        "nesting 1000": DEPTH,
        "id 30000 chars": f"userId: {LONG_ID}",
        "anonymousId 30000 chars": f"anonymousId: {LONG_ID}",
        "string over 2048 chars": "2049 characters; at most 2048",
        "event over 32 KiB": "bytes are accepted per event",
        "number 2**70": "outside ±1e+12",
        "timestamp 1970": PAST,
        "timestamp 9999": FUTURE,
        "timestamp a year ahead": FUTURE,
        "contact: id": f"userId: {RESERVED}",
        "type missing": "type: missing",
        "not an object (string)": "an event must be a JSON object, not a string",
        "not an object (array)": "an event must be a JSON object, not an array",
        "invalid event": "product_id",
    }

    def batch_hostiles(self, count: int) -> list[Input]:
        shapes = list(self.BATCH_SHAPES)
        picked = [shapes[self.rng.randrange(len(shapes))] for _ in range(count)]
        return [self.new(shape, "/v1/batch", self.BATCH_SHAPES[shape], "listed") for shape in picked]

    def send_batch(self, entries: list[tuple[Input | None, bytes]], what: str) -> tuple[int, dict[str, Any]]:
        """Post one batch; each hostile entry must be listed as rejected, each good one (None) accepted."""
        body = b'{"batch":[' + b",".join(raw for _, raw in entries) + b"]}"
        status, answer = self.post("/v1/batch", body)
        reasons = {entry.get("index"): entry.get("reason") for entry in answer.get("rejected", [])}
        for index, (hostile, _) in enumerate(entries):
            if hostile is not None:
                hostile.status = status
                hostile.answer = reasons.get(index)
            elif index in reasons:
                self.good_problems.append(f"{what}: good batch entry {index} rejected: {reasons[index]}")
        good = sum(1 for hostile, _ in entries if hostile is None)
        if good and (status != 200 or answer.get("accepted") != good):
            self.good_problems.append(f"{what}: batch answered {status} {str(answer)[:300]}; {good} good entries")
        return status, answer

    def batches(self) -> list[Action]:
        actions: list[Action] = []
        for _ in range(30):
            hostiles = self.batch_hostiles(8)
            actions.append(
                lambda hs=hostiles: self.send_batch([(h, self.batch_entry(h, h.category)) for h in hs], "batch")
            )
        for _ in range(10):  # nothing good in it: a 400 that still lists every entry, each a dead letter
            hostiles = self.batch_hostiles(6)

            def all_bad(hs: list[Input] = hostiles) -> None:
                status, answer = self.send_batch([(h, self.batch_entry(h, h.category)) for h in hs], "batch")
                if status != 400 or "no valid event in the batch" not in str(answer.get("error")):
                    self.good_problems.append(f"an all-hostile batch answered {status} {str(answer)[:200]}")

            actions.append(all_bad)
        dumps = orjson.dumps

        def whole(category: str, expect: str, times: int, build: Callable[[Input], bytes]) -> None:
            for _ in range(times):
                hostile = self.new(category, "/v1/batch", expect, "status", dead_letter=False)

                def act(hostile: Input = hostile) -> None:
                    status, answer = self.post("/v1/batch", build(hostile))
                    hostile.status, hostile.answer = status, str(answer.get("error"))

                actions.append(act)

        whole("batch not an array", "batch: missing or not an array", 5, lambda h: dumps({"batch": h.marker}))
        whole("batch empty", "batch: empty", 5, lambda h: dumps({"batch": [], "adv_marker": h.marker}))
        whole("batch not an object", "a batch must be a JSON object", 3, lambda h: dumps([self.document(h)]))
        whole(
            "batch context nesting 300",
            DEPTH,
            5,
            lambda h: b'{"context":' + nested_raw(299) + b',"batch":[' + dumps(self.document(h)) + b"]}",
        )
        whole("nesting 5000", MALFORMED, 5, lambda h: b'{"batch":[' + nested_raw(4998) + b"]}")
        whole(
            "body over 500 KiB",
            "batch request body is more than 512000 bytes",
            3,
            lambda h: dumps({"batch": [self.document(h, properties={"pad": "x" * 600_000})]}),
        )
        return actions

    # --- HTTP: webhooks -----------------------------------------------------------------------------------

    SENDGRID_SHAPES: dict[str, str] = {
        "sendgrid entry not an object": "entry is not a JSON object",
        "sendgrid contact person_id": "contact ids are the collector's own",
        "sendgrid no person": "no person_id/userId custom arg and no email address",
        "sendgrid no timestamp": "timestamp: missing or not a Unix time",
        "sendgrid timestamp 1.2e21": "is not a Unix time of this calendar",
        "sendgrid timestamp year 5138": FUTURE,
        "sendgrid person_id 30000 chars": f"userId: {LONG_ID}",
        "sendgrid url nesting 300": DEPTH,
        "sendgrid person_id a list": "person_id: not a string or a number",
        "sendgrid email 5000 chars": "properties.email: 5000 characters; at most 2048",
    }

    def sendgrid_entry(self, hostile: Input) -> Any:
        base: dict[str, Any] = {
            "event": "open",
            "email": f"{self.person(hostile)}@example.com",
            "person_id": self.person(hostile),
            "timestamp": int(time.time()),
            "sg_event_id": hostile.marker,
        }
        shape = hostile.category
        if shape == "sendgrid entry not an object":
            return hostile.marker
        if shape == "sendgrid contact person_id":
            return {**base, "person_id": "contact:email:" + "1" * 64}
        if shape == "sendgrid no person":
            return {k: v for k, v in base.items() if k not in ("person_id", "email")}
        if shape == "sendgrid no timestamp":
            return {k: v for k, v in base.items() if k != "timestamp"}
        if shape == "sendgrid timestamp 1.2e21":
            return {**base, "timestamp": 1.2e21}
        if shape == "sendgrid timestamp year 5138":
            return {**base, "timestamp": 100_000_000_000}
        if shape == "sendgrid person_id 30000 chars":
            return {**base, "person_id": "s" * 30_000}
        if shape == "sendgrid url nesting 300":
            return {**base, "event": "click", "url": nested_value(299)}
        if shape == "sendgrid person_id a list":
            return {**base, "person_id": [[1, [2, [3]]]]}
        return {k: v for k, v in {**base, "email": "e" * 4988 + "@example.com"}.items() if k != "person_id"}

    def webhooks(self) -> list[Action]:
        actions: list[Action] = []
        shapes = list(self.SENDGRID_SHAPES)
        for _ in range(15):
            hostiles = [
                self.new(shape, "/webhooks/sendgrid", self.SENDGRID_SHAPES[shape], "listed") for shape in shapes
            ]

            def post_sendgrid(hs: list[Input] = hostiles) -> None:
                # nested_value(299) cannot go through orjson.dumps: the entries are written one by one.
                parts = []
                for h in hs:
                    entry = self.sendgrid_entry(h)
                    if h.category == "sendgrid url nesting 300":
                        rest = {k: v for k, v in entry.items() if k != "url"}
                        parts.append(orjson.dumps(rest)[:-1] + b',"url":' + nested_raw(299, b'"u"') + b"}")
                    else:
                        parts.append(orjson.dumps(entry))
                body = b"[" + b",".join(parts) + b"]"
                status, answer = self.post("/webhooks/sendgrid", body, sendgrid_headers(self.sendgrid_key, body))
                reasons = {entry.get("index"): entry.get("reason") for entry in answer.get("rejected", [])}
                for index, h in enumerate(hs):
                    h.status, h.answer = status, reasons.get(index)

            actions.append(post_sendgrid)

        def whole(
            category: str, expect: str, times: int, build: Callable[[Input], tuple[bytes, dict[str, str]]]
        ) -> None:
            for _ in range(times):
                hostile = self.new(category, "/webhooks/sendgrid", expect, "status", dead_letter=False)

                def act(hostile: Input = hostile) -> None:
                    body, headers = build(hostile)
                    status, answer = self.post("/webhooks/sendgrid", body, headers)
                    hostile.status, hostile.answer = status, str(answer.get("error"))

                actions.append(act)

        def one(h: Input) -> bytes:
            return orjson.dumps(
                [{"event": "open", "person_id": self.person(h), "timestamp": 1, "sg_event_id": h.marker}]
            )

        def signed(body: bytes) -> tuple[bytes, dict[str, str]]:
            return body, sendgrid_headers(self.sendgrid_key, body)

        whole(
            "sendgrid unsigned",
            "missing or invalid SendGrid event webhook signature",
            5,
            lambda h: (one(h), {"Content-Type": "application/json"}),
        )
        whole(
            "sendgrid bad signature",
            "missing or invalid SendGrid event webhook signature",
            5,
            lambda h: (one(h), {**sendgrid_headers(self.sendgrid_key, b"other"), "Content-Type": "application/json"}),
        )
        whole(
            "sendgrid stale signature",
            "refused as a possible replay",
            3,
            lambda h: (one(h), sendgrid_headers(self.sendgrid_key, one(h), str(int(time.time()) - 3600))),
        )
        whole("sendgrid not an array", "JSON array of events", 3, lambda h: signed(orjson.dumps({"event": h.marker})))
        whole("sendgrid NaN", MALFORMED, 3, lambda h: signed(b'[{"event":"open","timestamp":NaN}]'))
        whole("sendgrid nesting 5000", MALFORMED, 2, lambda h: signed(b"[" + nested_raw(4999) + b"]"))

        inbound, status_route = "/webhooks/twilio/inbound", "/webhooks/twilio/status"

        def twilio_case(
            category: str,
            route: str,
            expect: str | None,
            refusal: Refusal,
            dead_letter: bool,
            times: int,
            form: Callable[[Input], list[tuple[str, str]]],
            query: str = "",
            sign: bool = True,
            raw_body: Callable[[Input], bytes] | None = None,
        ) -> None:
            for _ in range(times):
                hostile = self.new(category, route, expect, refusal, dead_letter)

                def act(hostile: Input = hostile) -> None:
                    url = f"{self.url}{route}" + (f"?{query}" if query else "")
                    pairs = form(hostile)
                    body = raw_body(hostile) if raw_body is not None else urlencode(pairs).encode()
                    headers = {"Content-Type": "application/x-www-form-urlencoded"}
                    if sign:
                        headers[twilio.SIGNATURE_HEADER] = twilio.expected_signature(TWILIO_TOKEN, url, pairs)
                    status, answer = self.post(route, body, headers, url=url)
                    hostile.status, hostile.answer = status, str(answer.get("error"))
                    if status == 200:
                        hostile.answer = None  # TwiML: the refusal is in the dead letter

                actions.append(act)

        def reply(h: Input, **fields: str) -> list[tuple[str, str]]:
            form = {"MessageSid": h.marker, "From": "+15550001234", "To": "+15550009999", "Body": "hello", **fields}
            return [(k, v) for k, v in form.items() if v is not None]

        twilio_case(
            "twilio MessageSid missing",
            inbound,
            "MessageSid: missing",
            "status",
            False,
            5,
            lambda h: [p for p in reply(h) if p[0] != "MessageSid"] + [("Marker", h.marker)],
        )
        twilio_case(
            "twilio contact person_id",
            inbound,
            "contact ids are the collector's own",
            "status",
            False,
            5,
            reply,
            query="person_id=contact:phone:" + "2" * 64,
        )
        twilio_case(
            "twilio no From",
            inbound,
            "From: missing",
            "status",
            False,
            5,
            lambda h: [p for p in reply(h) if p[0] != "From"],
        )
        twilio_case(
            "twilio Body 40000 chars",
            inbound,
            "properties.body: 40000 characters; at most 2048",
            "none",
            True,
            6,
            lambda h: reply(h, Body="b" * 40_000),
        )
        twilio_case(
            "twilio From 30000 chars",
            inbound,
            "properties.from: 30001 characters; at most 2048",
            "none",
            True,
            4,
            lambda h: reply(h, From="+" + "5" * 30_000),
        )
        twilio_case(
            "twilio invalid UTF-8",
            inbound,
            "form body is not UTF-8",
            "status",
            False,
            5,
            reply,
            raw_body=lambda h: b"MessageSid=" + h.marker.encode() + b"&Body=\xff\xfe&From=%2B1555",
        )
        twilio_case(
            "twilio form over 64 KiB",
            inbound,
            "form body is more than 65536 bytes",
            "status",
            False,
            3,
            lambda h: reply(h, Body="b" * 70_000),
        )
        twilio_case(
            "twilio unsigned", inbound, "missing or invalid X-Twilio-Signature", "status", False, 5, reply, sign=False
        )
        twilio_case(
            "twilio MessageSid missing",
            status_route,
            "MessageSid: missing",
            "status",
            False,
            4,
            lambda h: [("MessageStatus", "delivered"), ("To", "+15550001234"), ("Marker", h.marker)],
        )
        twilio_case(
            "twilio person_id 30000 chars in URL",
            status_route,
            None,
            "status",
            False,
            2,
            lambda h: [("MessageStatus", "delivered"), ("MessageSid", h.marker)],
            query="person_id=" + "q" * 30_000,
        )
        return actions

    # --- straight onto Kafka ------------------------------------------------------------------------------

    def produce(self, hostile: Input, topic: str, key: bytes | None, value: bytes | None) -> None:
        self.futures.append((hostile, self.producer.send(topic, key=key, value=value)))

    def kafka_events(self) -> list[Action]:
        actions: list[Action] = []
        topic = self.settings.events_topic
        dumps, doc = orjson.dumps, self.document

        def case(
            category: str,
            expect: str | None,
            times: int,
            value: Callable[[Input], bytes | None],
            key: Callable[[Input], bytes | None] | None = None,
            readable: bool = False,
        ) -> None:
            for _ in range(times):
                hostile = self.new(category, "kafka:events", expect, "none")
                if readable:
                    hostile.person = self.person(hostile)

                def act(hostile: Input = hostile) -> None:
                    chosen = key(hostile) if key is not None else self.person(hostile).encode()
                    self.produce(hostile, topic, chosen, value(hostile))

                actions.append(act)

        limit = "over a limit: "
        for levels in (33, 253, 254, 300):
            case(
                f"nesting {levels}",
                f"{limit}traits.a",
                40,
                lambda h, n=levels: self.raw(h, "traits", nested_raw(n - 1), "identify"),
            )
        case("nesting 5000", "not JSON", 30, lambda h: self.raw(h, "traits", nested_raw(4999), "identify"))
        case("id 30000 chars", f"{limit}userId: {LONG_ID}", 30, lambda h: dumps(doc(h, userId="u" * 30_000)))
        case(
            "id 30000 chars",
            f"{limit}anonymousId: {LONG_ID}",
            15,
            lambda h: dumps({**doc(h, anonymousId="a" * 30_000), "userId": None}),
        )
        case("id 30000 chars", f"{limit}messageId: {LONG_ID}", 15, lambda h: dumps(doc(h, messageId="m" * 30_000)))
        case(
            "id 30000 chars",
            f"{limit}properties.product_id: {LONG_ID}",
            15,
            lambda h: dumps(doc(h, event="Product Added", properties={"product_id": "p" * 30_000, "cart_id": "c"})),
        )
        case("id 40000 chars", f"{limit}event is", 10, lambda h: dumps(doc(h, userId="u" * 40_000)))
        case(
            "string over 2048 chars",
            f"{limit}properties.name: 2049 characters",
            30,
            lambda h: dumps(doc(h, properties={"product_id": "p", "name": "n" * 2049})),
        )
        case(
            "string over 2048 chars",
            f"{limit}traits.bio: 20000 characters",
            15,
            lambda h: dumps(doc(h, "identify", traits={"bio": "b" * 20_000})),
        )
        case(
            "event over 32 KiB",
            f"{limit}event is",
            20,
            lambda h: dumps(doc(h, properties={f"k{k}": "v" * 1800 for k in range(20)})),
        )
        many = [{"product_id": f"p{k}"} for k in range(10_000)]
        case(
            "10000 products",
            f"{limit}event is",
            10,
            lambda h: dumps(doc(h, event="Cart Viewed", properties={"products": many})),
        )
        case(
            "300 products",
            f"{limit}properties.products: 300 items",
            15,
            lambda h: dumps(doc(h, event="Cart Viewed", properties={"products": many[:300]})),
        )
        for category, number, expect, times in (
            ("number NaN", b"NaN", "not JSON", 30),
            ("number Infinity", b"-Infinity", "not JSON", 15),
            ("number 1e400", b"1e400", "not JSON", 30),
            ("number 2**70", str(2**70).encode(), f"{limit}properties.v: number", 30),
            ("number 2**64-1", str(2**64 - 1).encode(), f"{limit}properties.v: number", 15),
            ("number 1e300", b"1e300", f"{limit}properties.v: number", 15),
        ):
            case(category, expect, times, lambda h, v=number: self.raw(h, "properties", b'{"v":' + v + b"}"))
        case("invalid UTF-8", "not JSON", 30, lambda h: self.raw(h, "properties", b'{"name":"\xff\xfe"}'))
        year_ahead = iso(now() + timedelta(days=365))
        for category, stamp, expect, times in (
            ("timestamp year 1", "0001-01-01T00:00:00Z", PAST, 20),
            ("timestamp year 1 +01:00", "0001-01-01T00:00:00+01:00", "timestamp", 10),
            ("timestamp 1970", "1970-01-01T00:00:00Z", PAST, 20),
            ("timestamp 9999", "9999-12-31T23:59:59Z", FUTURE, 20),
            ("timestamp a year ahead", year_ahead, FUTURE, 20),
            ("timestamp not a date", "tomorrow", "invalid event: timestamp", 10),
        ):
            case(category, expect, times, lambda h, t=stamp: dumps(doc(h, timestamp=t)), readable=True)
        case(
            "timestamp missing",
            "invalid event: timestamp",
            10,
            lambda h: dumps({k: v for k, v in doc(h).items() if k != "timestamp"}),
            readable=True,
        )
        for category, value, times in (
            ("not JSON", lambda h: b"hello " + h.marker.encode(), 20),
            ("not JSON", lambda h: b"\x00\x01\x02" + h.marker.encode(), 10),
            ("not JSON", lambda h: b'{"userId":"' + h.marker.encode(), 10),
            ("not JSON", lambda h: b"<event>" + h.marker.encode() + b"</event>", 10),
        ):
            case(category, "not JSON", times, value)
        case("empty value", "empty message", 20, lambda h: b"")
        case("empty value (tombstone)", "empty message", 20, lambda h: None)
        case("JSON array", "not a JSON object but list", 10, lambda h: b"[]")
        case("JSON array", "not a JSON object but list", 20, lambda h: dumps([doc(h)]))
        case("JSON scalar", "not a JSON object but int", 10, lambda h: b"42")
        case("JSON scalar", "not a JSON object but str", 10, lambda h: dumps(h.marker))
        case("JSON scalar", "not a JSON object but NoneType", 10, lambda h: b"null")
        case("JSON scalar", "not a JSON object but bool", 5, lambda h: b"true")
        for expect, times, value in (
            (
                "product_id: Field required",
                20,
                lambda h: dumps(doc(h, event="Product Added", properties={"cart_id": "c"})),
            ),
            ("a track event needs an event name", 10, lambda h: dumps(doc(h, event=None))),
            ("an event needs userId or anonymousId", 10, lambda h: dumps({**doc(h), "userId": None})),
            ("invalid event: type", 10, lambda h: dumps(doc(h, type="explode"))),
            ("price", 10, lambda h: dumps(doc(h, event="Product Added", properties={"product_id": "p", "price": -1}))),
            (
                "order_id: Field required",
                10,
                lambda h: dumps(doc(h, event="Order Completed", properties={"revenue": 1})),
            ),
        ):
            case("invalid event", expect, times, value, readable=True)
        case(
            "too many entries",
            f"{limit}traits: 200 traits",
            10,
            lambda h: dumps(doc(h, "identify", traits={f"t{k}": k for k in range(200)})),
        )
        case(
            "too many entries",
            f"{limit}properties: 300 properties",
            10,
            lambda h: dumps(doc(h, properties={f"p{k}": k for k in range(300)})),
        )
        case(
            "too many entries",
            f"{limit}properties.extra: 300 keys",
            10,
            lambda h: dumps(doc(h, properties={"extra": {f"k{k}": k for k in range(300)}})),
        )
        # A valid event under another key: the worker moves it to its person's partition, nothing is lost.
        for category, key, times in (
            ("wrong key (none)", lambda h: None, 20),
            ("wrong key (another person)", lambda h: f"someone-else-{h.n}".encode(), 20),
            ("wrong key (invalid UTF-8)", lambda h: b"\xff\xfe" + str(h.n).encode(), 10),
            ("wrong key (30000 chars)", lambda h: b"k" * 30_000, 10),
        ):
            for _ in range(times):
                hostile = self.new(category, "kafka:events", None, "none", dead_letter=False)
                body = dumps(doc(hostile))
                hostile.rekeyed = (self.person(hostile).encode(), body)
                actions.append(lambda h=hostile, k=key, v=body: self.produce(h, topic, k(h), v))
        case("wrong key, not JSON", "not JSON", 10, lambda h: b"NaN" + h.marker.encode(), key=lambda h: None)
        case(
            "wrong key, nesting 300",
            f"{limit}traits.a",
            10,
            lambda h: self.raw(h, "traits", nested_raw(299), "identify"),
            key=lambda h: b"\xff" * 3,
        )
        return actions

    def kafka_identity(self) -> list[Action]:
        actions: list[Action] = []
        topic = self.settings.identity_topic
        dumps = orjson.dumps
        shoppers = [shopper.person for shopper in self.shoppers]

        def case(
            category: str,
            expect: str | None,
            times: int,
            value: Callable[[Input, str], bytes | None],
            target_shoppers: bool = False,
        ) -> None:
            for index in range(times):
                hostile = self.new(category, "kafka:identity", expect, "none")
                person = shoppers[index % len(shoppers)] if target_shoppers else self.person(hostile)

                def act(hostile: Input = hostile, person: str = person) -> None:
                    self.produce(hostile, topic, person.encode(), value(hostile, person))

                actions.append(act)

        def merge(h: Input, person: str, state: Any) -> bytes:
            return dumps({"kind": "merge", "anonymous_id": f"anon-{h.marker}", "person_id": person, "state": state})

        def merge_raw(h: Input, person: str, state: bytes) -> bytes:
            return merge(h, person, None)[: -len(b"null}")] + state + b"}"

        def deep_traits_state(h: Input, levels: int) -> bytes:
            profile = b'{"person_id":"anon-' + h.marker.encode() + b'","traits":' + nested_raw(levels) + b"}"
            return b'{"profile":' + profile + b"}"

        invalid = "invalid identity message"
        case("empty value", "empty message", 15, lambda h, p: b"")
        case("empty value (tombstone)", "empty message", 15, lambda h, p: None)
        case("not JSON", "not JSON", 15, lambda h, p: b"merge " + h.marker.encode())
        case("not JSON", "not JSON", 5, lambda h, p: b'{"kind":"merge","state":NaN}')
        case("JSON array", "not a JSON object but list", 10, lambda h, p: dumps([{"kind": "link", "marker": h.marker}]))
        case("missing fields", invalid, 15, lambda h, p: dumps({"kind": "link", "marker": h.marker}))
        case("missing fields", invalid, 15, lambda h, p: dumps({"kind": "merge", "person_id": p}), target_shoppers=True)
        case("missing fields", invalid, 10, lambda h, p: b"{}")
        case(
            "unknown kind",
            invalid,
            20,
            lambda h, p: dumps({"kind": "teleport", "anonymous_id": "a", "person_id": p}),
            target_shoppers=True,
        )
        case("merge, state garbage", invalid, 15, lambda h, p: merge(h, p, "garbage"), target_shoppers=True)
        case("merge, state garbage", invalid, 10, lambda h, p: merge(h, p, [1, 2, 3]), target_shoppers=True)
        case("merge, state garbage", None, 15, lambda h, p: merge(h, p, {}), target_shoppers=True)
        case("merge, state garbage", None, 15, lambda h, p: merge(h, p, {"profile": "x"}), target_shoppers=True)
        case(
            "merge, state garbage",
            None,
            10,
            lambda h, p: merge(h, p, {"profile": {"person_id": 5}, "carts": "no"}),
            target_shoppers=True,
        )
        case("merge, state nested 300", None, 15, lambda h, p: merge_raw(h, p, nested_raw(300)), target_shoppers=True)
        # As deep as the traits of an identify nested 300, 100 and 33 levels: over the limit an event is held to.
        case("merge, traits nested 300", None, 10, lambda h, p: merge_raw(h, p, deep_traits_state(h, 299)))
        case("merge, traits nested 100", None, 5, lambda h, p: merge_raw(h, p, deep_traits_state(h, 99)))
        case("merge, traits nested 33", None, 5, lambda h, p: merge_raw(h, p, deep_traits_state(h, 32)))
        case("merge, state nested 5000", "not JSON", 5, lambda h, p: merge_raw(h, p, nested_raw(5000)))
        case(
            "id 30000 chars",
            "over a limit: anonymous_id",
            10,
            lambda h, p: dumps({"kind": "link", "anonymous_id": "a" * 30_000, "person_id": p}),
        )
        case(
            "id 30000 chars",
            "over a limit: person_id",
            10,
            lambda h, p: dumps({"kind": "merge", "anonymous_id": "a", "person_id": "p" * 30_000, "state": {}}),
        )
        case(
            "id 30000 chars",
            "over a limit: contact_id",
            10,
            lambda h, p: dumps(
                {"kind": "contact", "contact_id": "contact:" + "c" * 30_000, "person_id": p, "op": "add"}
            ),
        )
        case(
            "contact, op garbage",
            invalid,
            10,
            lambda h, p: dumps({"kind": "contact", "contact_id": "contact:email:x", "person_id": p, "op": "explode"}),
        )
        case(
            "forget_merged, garbage time",
            invalid,
            10,
            lambda h, p: dumps({"kind": "forget_merged", "person_id": p, "request_id": "r", "requested_at": "soon"}),
            target_shoppers=True,
        )
        return actions

    def kafka_privacy(self) -> list[Action]:
        actions: list[Action] = []
        topic = self.settings.privacy_topic
        dumps = orjson.dumps
        shoppers = [shopper.person for shopper in self.shoppers]
        stamp = iso(now())

        def case(
            category: str, times: int, value: Callable[[Input, str], bytes | None], target_shoppers: bool = False
        ) -> None:
            for index in range(times):
                hostile = self.new(category, "kafka:privacy", "invalid privacy request", "none")
                person = shoppers[index % len(shoppers)] if target_shoppers else self.person(hostile)

                def act(hostile: Input = hostile, person: str = person) -> None:
                    self.produce(hostile, topic, person.encode(), value(hostile, person))

                actions.append(act)

        case("empty value", 10, lambda h, p: b"")
        case("empty value (tombstone)", 10, lambda h, p: None)
        case("not JSON", 10, lambda h, p: b"erase " + h.marker.encode())
        case("JSON array", 5, lambda h, p: dumps([{"kind": "erase", "personId": p}]))
        case("missing fields", 10, lambda h, p: dumps({"kind": "erase", "marker": h.marker}))
        # Malformed requests naming a good shopper: none of them may erase anybody.
        case(
            "unknown kind, naming a shopper",
            10,
            lambda h, p: dumps({"kind": "destroy", "requestId": h.marker, "personId": p, "requestedAt": stamp}),
            target_shoppers=True,
        )
        case(
            "no requestId, naming a shopper",
            10,
            lambda h, p: dumps({"kind": "erase", "personId": p, "requestedAt": stamp}),
            target_shoppers=True,
        )
        case(
            "garbage time, naming a shopper",
            5,
            lambda h, p: dumps(
                {"kind": "erase", "requestId": h.marker, "personId": p, "requestedAt": "0001-01-01T00:00:00+01:00"}
            ),
            target_shoppers=True,
        )
        case(
            "personId 30000 chars",
            5,
            lambda h, p: dumps(
                {"kind": "erase", "requestId": h.marker, "personId": "e" * 30_000, "requestedAt": stamp}
            ),
        )
        case(
            "personId a number",
            5,
            lambda h, p: dumps({"kind": "erase", "requestId": h.marker, "personId": 12, "requestedAt": stamp}),
        )
        case(
            "nesting 300",
            5,
            lambda h, p: (
                dumps({"kind": "erase", "requestId": h.marker, "personId": p, "requestedAt": stamp})[:-1]
                + b',"extra":'
                + nested_raw(300)
                + b"}"
            ),
        )
        case("nesting 5000", 5, lambda h, p: nested_raw(5000))
        return actions

    # --- the good workload --------------------------------------------------------------------------------

    def make_shoppers(self) -> None:
        for index in range(SHOPPERS):
            person = f"shopper-{self.run}-{index:02d}"
            kind = KINDS[index % len(KINDS)]
            path = GOOD_PATHS[(index // len(KINDS)) % len(GOOD_PATHS)]
            shopper = Shopper(index, person, kind, path, f"{person}@example.com")
            a, b = f"cart-{self.run}-{index:02d}-a", f"cart-{self.run}-{index:02d}-b"
            shopper.carts = {"abandoner": {a}, "buyer": set(), "two_carts": {a, b}, "repeat": {a}, "other_order": {a}}[
                kind
            ]
            self.shoppers.append(shopper)

    @property
    def grower(self) -> Shopper:
        return self.shoppers[0]

    def shopper_events(self, shopper: Shopper) -> list[dict[str, Any]]:
        """What the shopper does, in order; timestamps are taken now, as the events are sent."""
        i = shopper.index
        a, b = f"cart-{self.run}-{i:02d}-a", f"cart-{self.run}-{i:02d}-b"
        events: list[dict[str, Any]] = []

        def add(step: str, document: dict[str, Any]) -> None:
            message_id = f"good-{self.run}-{i:02d}-{step}"
            shopper.message_ids.append(message_id)
            events.append({**document, "userId": shopper.person, "messageId": message_id, "timestamp": iso(now())})

        def added(cart: str, product: str) -> dict[str, Any]:
            properties = {"product_id": product, "cart_id": cart, "name": "Trail shoes", "price": 119.0}
            return {"type": "track", "event": "Product Added", "properties": properties}

        def ordered(cart: str) -> dict[str, Any]:
            properties = {"order_id": f"order-{self.run}-{i}", "cart_id": cart, "revenue": 119.0}
            return {"type": "track", "event": "Order Completed", "properties": properties}

        add("identify", {"type": "identify", "traits": {"email": shopper.email, "name": f"Shopper {i}"}})
        if shopper is self.grower:
            for round_ in range(GROWER_IDENTIFIES):
                traits = {f"trait_{round_:02d}_{k:02d}": f"value {k}" for k in range(60)}
                add(f"identify-{round_:02d}", {"type": "identify", "traits": traits})
        add("add-a", added(a, "sku-1"))
        if shopper.kind == "buyer":
            add("order-a", ordered(a))
        elif shopper.kind == "two_carts":
            add("add-b", added(b, "sku-2"))
        elif shopper.kind == "repeat":
            add("add-a-again", added(a, "sku-3"))
        elif shopper.kind == "other_order":
            add("add-b", added(b, "sku-2"))
            add("order-b", ordered(b))
        return events

    def shop(self, shopper: Shopper) -> None:
        events = self.shopper_events(shopper)
        what = f"{shopper.person} ({shopper.kind}, {shopper.path})"
        if shopper.path == "kafka":
            for document in events:
                self.producer.send(
                    self.settings.events_topic, key=shopper.person.encode(), value=orjson.dumps(document)
                ).get(timeout=30)
        elif shopper.path == "collector":
            for document in events:
                status, answer = self.post(f"/v1/{document['type']}", orjson.dumps(document))
                if status != 200 or answer != {"success": True}:
                    self.good_problems.append(f"{what}: {document['messageId']} answered {status} {answer}")
        else:  # one batch: a hostile entry before and after each good one
            hostiles = self.batch_hostiles(len(events) + 1)
            entries: list[tuple[Input | None, bytes]] = []
            for hostile, document in zip(hostiles, events, strict=False):
                entries.append((hostile, self.batch_entry(hostile, hostile.category)))
                entries.append((None, orjson.dumps(document)))
            entries.append((hostiles[-1], self.batch_entry(hostiles[-1], hostiles[-1].category)))
            self.send_batch(entries, what)

    # --- the run --------------------------------------------------------------------------------------------

    def plan(self) -> list[Action]:
        self.make_shoppers()
        hostile = [
            *self.single_calls(),
            *self.batches(),
            *self.webhooks(),
            *self.kafka_events(),
            *self.kafka_identity(),
            *self.kafka_privacy(),
        ]
        self.rng.shuffle(hostile)
        plan: list[Action] = []
        spacing = len(hostile) // (SHOPPERS + 1)
        shoppers = iter(self.shoppers)
        for position, action in enumerate(hostile):
            if position and position % spacing == 0:
                shopper = next(shoppers, None)
                if shopper is not None:
                    plan.append(lambda s=shopper: self.shop(s))
            plan.append(action)
        plan.extend(lambda s=shopper: self.shop(s) for shopper in shoppers)
        return plan

    def execute(self, plan: list[Action]) -> None:
        for step, action in enumerate(plan):
            action()
            if step % 25 == 0:
                self.check_alive()
        self.producer.flush(timeout=60)
        for hostile, future in self.futures:
            metadata = future.get(timeout=60)
            hostile.position = (metadata.topic, metadata.partition, metadata.offset)
        self.check_alive()


class TopicReader:
    """Every message of a topic from the beginning, read on as more arrive (one consumer, kept open)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        partitions = self.consumer.partitions_for_topic(topic) or set()
        self.partitions = [TopicPartition(topic, number) for number in sorted(partitions)]
        self.consumer.assign(self.partitions)
        self.consumer.seek_to_beginning(*self.partitions)
        self.messages: list[Any] = []

    def catch_up(self, timeout: float = 60) -> list[Any]:
        """Read up to the end offsets as they are now."""
        ends = self.consumer.end_offsets(self.partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.consumer.position(tp) >= end for tp, end in ends.items()):
                break
            for records in self.consumer.poll(timeout_ms=300, max_records=5000).values():
                self.messages.extend(records)
        return self.messages

    def close(self) -> None:
        self.consumer.close()


def wait_for(condition: Callable[[], bool], timeout: float, every: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)


def test_the_pipeline_survives_hostile_input_and_keeps_every_good_nudge_exactly_once(
    settings: Settings, producer: KafkaProducer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    sendgrid_key, sendgrid_public = generate_sendgrid_key()
    settings = with_rules(settings, tmp_path, delay="3s").model_copy(
        update={
            "sink_web_port": free_port(),
            "collector_write_keys": {WRITE_KEY: "adversarial"},
            "sendgrid_public_key": sendgrid_public,
            "twilio_auth_token": SecretStr(TWILIO_TOKEN),
        }
    )
    environment = pipeline_environment(settings)
    collector_port = free_port()
    collector_url = f"http://127.0.0.1:{collector_port}"
    sink_url = f"http://127.0.0.1:{settings.sink_web_port}"
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    sink = sink_service(settings, environment, tmp_path / "sink.log")
    collector = collector_service(settings, environment, tmp_path / "collector.log", collector_port)
    services: list[Service | WorkerProcess] = [worker, sink, collector]
    readers: list[TopicReader] = []
    try:
        worker.start()
        sink.start()
        collector.start()
        wait_for_http(f"{collector_url}/openapi.json", collector)
        wait_for_http(f"{sink_url}/metrics", sink)
        # The worker is ready once it has stored the state of a first person.
        warmup = f"warmup-{uuid.uuid4().hex[:6]}"
        warm = {
            "type": "track",
            "event": "Product Viewed",
            "userId": warmup,
            "timestamp": iso(now()),
            "properties": {"product_id": "p"},
        }
        producer.send(settings.events_topic, key=warmup.encode(), value=orjson.dumps(warm)).get(timeout=30)
        changelog = TopicReader(settings.kafka_bootstrap, settings.changelog_topic("persons"))
        readers.append(changelog)
        assert wait_for(
            lambda: not worker.alive() or any(m.key == warmup.encode() for m in changelog.catch_up(5)), 90, 0.2
        ), f"the worker did not start:\n{worker.log()[-3000:]}"
        assert worker.alive(), f"the worker exited at start:\n{worker.log()[-3000:]}"

        adversary = Adversary(settings, producer, collector_url, sendgrid_key, services)
        plan = adversary.plan()
        adversary.execute(plan)
        sent_at = time.monotonic()
        hostile_inputs = adversary.inputs
        shoppers = adversary.shoppers

        # --- the good reminders: every one exactly once, nobody else ---------------------------------------
        expected = {(shopper.person, cart) for shopper in shoppers for cart in shopper.carts}
        triggers_reader = TopicReader(settings.kafka_bootstrap, settings.triggers_topic)
        readers.append(triggers_reader)

        def triggers() -> list[Trigger]:
            return [Trigger.model_validate_json(m.value) for m in triggers_reader.catch_up()]

        wait_for(lambda: expected <= {(t.person_id, t.context.get("cart_id")) for t in triggers()}, 60)
        time.sleep(5)  # more than the delay and the grace: a late duplicate or an unexpected reminder shows
        seen = triggers()
        by_id = Counter(trigger.trigger_id for trigger in seen)
        seen_pairs = Counter(
            (trigger.person_id, trigger.context.get("cart_id")) for trigger in {t.trigger_id: t for t in seen}.values()
        )
        lost = expected - set(seen_pairs)
        unexpected = set(seen_pairs) - expected
        duplicated = {tid: count for tid, count in by_id.items() if count > 1}
        twice_decided = {pair: count for pair, count in seen_pairs.items() if count > 1}
        emails = {shopper.person: shopper.email for shopper in shoppers}
        wrong_address = [t for t in seen if t.person_id in emails and t.address != emails[t.person_id]]
        suppressed: list[Suppression] = []
        if lost:
            suppressions = TopicReader(settings.kafka_bootstrap, settings.suppressed_topic)
            readers.append(suppressions)
            suppressed = [Suppression.model_validate_json(m.value) for m in suppressions.catch_up()]

        # --- every hostile input accounted for ----------------------------------------------------------------
        pattern = adversary.marker_pattern
        markers = {hostile.marker: hostile for hostile in hostile_inputs}
        positions = {hostile.position: hostile for hostile in hostile_inputs if hostile.position is not None}
        letters_reader = TopicReader(settings.kafka_bootstrap, settings.dead_letter_topic)
        readers.append(letters_reader)
        letters: list[tuple[Any, DeadLetter | None]] = []
        unowned: list[tuple[Any, DeadLetter | None]] = []
        last_letter_at = [time.monotonic()]

        def owners(letter: DeadLetter) -> list[Input]:
            """The inputs a dead letter is about: the message at its position, or (the collector's own, which
            never were on a topic) the HTTP inputs whose marker its value holds."""
            owner = positions.get((letter.topic, letter.partition, letter.offset))
            if owner is not None:
                return [owner]
            if letter.topic != "collector":
                return []
            found = (markers.get(f"adv{adversary.run}n{number}z") for number in set(pattern.findall(letter.value)))
            return [hostile for hostile in found if hostile is not None and hostile.http]

        def read_letters() -> bool:
            messages = letters_reader.catch_up()
            if len(messages) > len(letters):
                last_letter_at[0] = time.monotonic()
            for message in messages[len(letters) :]:
                try:
                    letter: DeadLetter | None = DeadLetter.model_validate_json(message.value)
                except ValueError:
                    letter = None
                letters.append((message, letter))
                found = owners(letter) if letter is not None else []
                for hostile in found:
                    hostile.letters.append(letter)  # type: ignore[arg-type]
                if not found:
                    unowned.append((message, letter))
            return all(h.letters for h in hostile_inputs if h.dead_letter)

        source_topics = (settings.events_topic, settings.identity_topic, settings.privacy_topic)

        def worker_done() -> bool:
            """The worker has committed everything produced: what it published for it is on the topics."""
            return all(group_caught_up(settings.kafka_bootstrap, settings.app_id, topic) for topic in source_topics)

        # Until every due dead letter is there, or the worker is through and nothing new came for 5s.
        wait_for(lambda: read_letters() or (worker_done() and time.monotonic() - last_letter_at[0] > 5), 120, 2)

        events_reader = TopicReader(settings.kafka_bootstrap, settings.events_topic)
        readers.append(events_reader)

        def rekeyed() -> bool:
            published = {(m.key, m.value) for m in events_reader.catch_up() if m.key is not None}
            for hostile in hostile_inputs:
                if hostile.rekeyed is not None:
                    hostile.rekey_seen = hostile.rekeyed in published
            return all(h.rekey_seen for h in hostile_inputs if h.rekeyed is not None)

        wait_for(lambda: rekeyed() or worker_done(), 60, 2)
        rekeyed()

        # --- ClickHouse, through the sink's API: the good shoppers' events and reminders exactly once --------
        trigger_ids = defaultdict(set)
        for trigger in seen:
            trigger_ids[trigger.person_id].add(trigger.trigger_id)
        stored: dict[str, dict[str, Any]] = {}

        def export(person: str) -> dict[str, Any] | None:
            try:
                answer = requests.get(
                    f"{sink_url}/api/people/{quote(person, safe='')}/export", headers=API_AUTH, timeout=60
                )
            except requests.RequestException:
                return None
            return answer.json() if answer.status_code == 200 else None

        def clickhouse_complete() -> bool:
            for shopper in shoppers:
                document = export(shopper.person)
                if document is not None:
                    stored[shopper.person] = document
            return all(
                sorted(row["message_id"] for row in stored.get(s.person, {}).get("tables", {}).get("events", []))
                == sorted(s.message_ids)
                and {row["trigger_id"] for row in stored[s.person]["tables"].get("triggers", [])}
                >= trigger_ids[s.person]
                for s in shoppers
            )

        sink_group = f"{settings.app_id}-sink"
        wait_for(lambda: group_caught_up(settings.kafka_bootstrap, sink_group, settings.events_topic), 90, 2)
        wait_for(clickhouse_complete, 60, 2)
        missing_events: dict[str, list[str]] = {}
        duplicated_events: dict[str, list[str]] = {}
        extra_events: dict[str, list[str]] = {}
        trigger_rows_wrong: dict[str, str] = {}
        for shopper in shoppers:
            tables = stored.get(shopper.person, {}).get("tables", {})
            rows = Counter(row["message_id"] for row in tables.get("events", []))
            if missing := [m for m in shopper.message_ids if m not in rows]:
                missing_events[shopper.person] = missing
            if twice := [m for m, count in rows.items() if count > 1]:
                duplicated_events[shopper.person] = twice
            if extra := [m for m in rows if m not in shopper.message_ids]:
                extra_events[shopper.person] = extra
            trigger_rows = Counter(row["trigger_id"] for row in tables.get("triggers", []))
            if trigger_rows != Counter(trigger_ids[shopper.person]):
                trigger_rows_wrong[shopper.person] = (
                    f"rows {dict(trigger_rows)}, published {sorted(trigger_ids[shopper.person])}"
                )
        # Hostile events that reached the events topic as readable JSON and were dead-lettered: no event rows.
        sampled: dict[str, list[Input]] = defaultdict(list)
        for hostile in hostile_inputs:
            if hostile.person is not None and len(sampled[hostile.category]) < 2:
                sampled[hostile.category].append(hostile)
        hostile_rows: dict[str, str] = {}
        for category, sample in sampled.items():
            for hostile in sample:
                document = export(hostile.person or "")
                if document is None:
                    hostile_rows[f"{category} ({hostile.person})"] = "export failed"
                elif rows := document.get("tables", {}).get("events", []):
                    hostile_rows[f"{category} ({hostile.person})"] = (
                        f"{len(rows)} event rows, timestamp {rows[0].get('timestamp')}"
                    )

        # --- the person who identified forty times: bounded, and still nudged at their address ---------------
        grower = adversary.grower
        profile_answer = requests.get(
            f"http://127.0.0.1:{settings.worker_web_port}/profiles/{grower.person}", headers=API_AUTH, timeout=30
        )
        grower_problems: list[str] = []
        if profile_answer.status_code != 200:
            grower_problems.append(f"profile answered {profile_answer.status_code}: {profile_answer.text[:300]}")
        else:
            profile = profile_answer.json()["profile"]
            traits = profile.get("traits", {})
            limits = settings.limits
            if len(traits) > limits.traits or len(orjson.dumps(traits)) > limits.traits_bytes:
                grower_problems.append(f"{len(traits)} traits, {len(orjson.dumps(traits))} bytes: over the limits")
            if profile.get("email") != grower.email:
                grower_problems.append(f"email {profile.get('email')!r}, not {grower.email!r}")
            newest = {f"trait_{GROWER_IDENTIFIES - 1:02d}_{k:02d}" for k in range(60)}
            if not newest <= set(traits):
                grower_problems.append(
                    f"the newest identify's traits were not all kept: {sorted(newest - set(traits))[:5]}"
                )

        # The last word on dead letters: everything on the topic now, and whatever none of the inputs owns.
        read_letters()
        adversary.check_alive()
        elapsed = time.monotonic() - started
        unmatched = unowned
        good_in_letters = [
            letter for _, letter in letters if letter is not None and f"good-{adversary.run}-" in letter.value
        ]
        verdicts = {hostile.n: hostile.verdict() for hostile in hostile_inputs}
        unaccounted = [hostile for hostile in hostile_inputs if verdicts[hostile.n] is not None]

        # --- the summary ---------------------------------------------------------------------------------------
        lines = summary(
            adversary,
            verdicts,
            letters,
            unmatched,
            expected,
            seen_pairs,
            lost,
            duplicated,
            twice_decided,
            unexpected,
            missing_events,
            duplicated_events,
            hostile_rows,
            elapsed,
            sent_at - started,
        )

        problems: list[str] = []
        if adversary.crashes:
            problems.append(f"processes exited: {adversary.crashes}")
        if adversary.server_errors:
            problems.append(f"{len(adversary.server_errors)} 5xx answers: {adversary.server_errors[:5]}")
        if adversary.no_answer:
            problems.append(f"{len(adversary.no_answer)} requests without an answer: {adversary.no_answer[:5]}")
        if adversary.good_problems:
            problems.append(f"good calls refused: {adversary.good_problems[:5]}")
        if lost:
            reasons = {(s.trigger.person_id, s.trigger.context.get("cart_id")): s.reason.value for s in suppressed}
            problems.append(
                f"{len(lost)} good reminders lost: {[(p, c, reasons.get((p, c))) for p, c in sorted(lost)][:8]}"
            )
        if duplicated:
            problems.append(f"{len(duplicated)} trigger ids published more than once: {list(duplicated.items())[:5]}")
        if twice_decided:
            problems.append(f"carts reminded under more than one trigger id: {list(twice_decided.items())[:5]}")
        if unexpected:
            problems.append(f"{len(unexpected)} reminders for nobody expected: {sorted(unexpected, key=str)[:8]}")
        if wrong_address:
            problems.append(f"reminders to the wrong address: {[(t.person_id, t.address) for t in wrong_address][:5]}")
        if unaccounted:
            by_reason = Counter(f"{h.path} {h.category}: {verdicts[h.n]}"[:300] for h in unaccounted)
            problems.append(
                f"{len(unaccounted)} hostile inputs unaccounted for: "
                + "; ".join(f"{count}x {what}" for what, count in by_reason.most_common(12))
            )
        if unmatched:
            described = Counter(
                (f"{letter.topic}: {reason_prefix(letter.reason)}" if letter else "unparseable dead letter")
                for _, letter in unmatched
            )
            problems.append(f"{len(unmatched)} dead letters of no hostile input: {described.most_common(8)}")
            problems.append(
                "first unmatched: "
                + "; ".join(
                    f"{ltr.topic}/{ltr.partition}@{ltr.offset} {ltr.reason[:200]}" for _, ltr in unmatched[:3] if ltr
                )
            )
        if good_in_letters:
            problems.append(
                f"{len(good_in_letters)} good events dead-lettered: {[ltr.reason for ltr in good_in_letters][:3]}"
            )
        if missing_events or duplicated_events or extra_events:
            problems.append(
                f"ClickHouse events: missing {dict(list(missing_events.items())[:3])}, "
                f"duplicated {dict(list(duplicated_events.items())[:3])}, extra {dict(list(extra_events.items())[:3])}"
            )
        if trigger_rows_wrong:
            problems.append(f"ClickHouse triggers differ from the topic: {dict(list(trigger_rows_wrong.items())[:3])}")
        if hostile_rows:
            problems.append(f"hostile events stored in ClickHouse: {hostile_rows}")
        if grower_problems:
            problems.append(f"{grower.person} after {GROWER_IDENTIFIES} identifies: {grower_problems}")
        if problems:
            for service in services:
                name = getattr(service, "name", "worker")
                tail = service.log_tail(15) if isinstance(service, Service) else worker.log()[-2000:]
                problems.append(f"--- {name} log tail ---\n{tail}")
        if elapsed > 300:
            problems.append(f"took {elapsed:.0f}s; at most 300")
        with capsys.disabled():
            print("\n" + "\n".join(lines), flush=True)
        assert not problems, "\n".join(problems)
    finally:
        for reader in readers:
            reader.close()
        for service in (collector, sink, worker):
            service.stop()


def summary(
    adversary: Adversary,
    verdicts: dict[int, str | None],
    letters: list[tuple[Any, DeadLetter | None]],
    unmatched: list[tuple[Any, DeadLetter | None]],
    expected: set[tuple[str, str]],
    seen_pairs: Counter[tuple[str, Any]],
    lost: set[tuple[str, str]],
    duplicated: dict[str, int],
    twice_decided: dict[tuple[str, Any], int],
    unexpected: set[tuple[str, Any]],
    missing_events: dict[str, list[str]],
    duplicated_events: dict[str, list[str]],
    hostile_rows: dict[str, str],
    elapsed: float,
    sending: float,
) -> list[str]:
    inputs = adversary.inputs
    header = (
        f"{'path':<26} {'inputs':>6} {'4xx':>5} {'listed':>6} {'dead letters':>12} {'re-keyed':>8} {'unaccounted':>11}"
    )

    def row(name: str, group: list[Input]) -> str:
        refused = sum(1 for h in group if h.http and h.status is not None and 400 <= h.status < 500)
        listed = sum(1 for h in group if h.refusal == "listed" and h.answer is not None)
        lettered = sum(1 for h in group if h.letters)
        moved = sum(1 for h in group if h.rekey_seen)
        bad = sum(1 for h in group if verdicts[h.n] is not None)
        return f"{name[:26]:<26} {len(group):>6} {refused:>5} {listed:>6} {lettered:>12} {moved:>8} {bad:>11}"

    by_path: dict[str, list[Input]] = defaultdict(list)
    by_category: dict[tuple[str, str], list[Input]] = defaultdict(list)
    for hostile in inputs:
        by_path[hostile.path].append(hostile)
        family = "http" if hostile.http else hostile.path
        by_category[(family, hostile.category)].append(hostile)
    lines = ["=" * 82, f"adversarial suite, run {adversary.run}: {len(inputs)} hostile inputs", "", header]
    lines += [row(path, group) for path, group in sorted(by_path.items())]
    lines.append(row("total", inputs))
    lines += ["", f"{'category':<48} {'inputs':>6} {'refused':>7} {'dead letters':>12} {'unaccounted':>11}"]
    for (family, category), group in sorted(by_category.items()):
        refused = sum(1 for h in group if (h.http and h.status is not None and 400 <= h.status < 500) or h.answer)
        bad = sum(1 for h in group if verdicts[h.n] is not None)
        name = f"{family} {category}"[:48]
        lines.append(f"{name:<48} {len(group):>6} {refused:>7} {sum(1 for h in group if h.letters):>12} {bad:>11}")
    prefixes = Counter(
        f"{ltr.topic.rsplit('.', 1)[-1]}: {reason_prefix(ltr.reason)}" for _, ltr in letters if ltr is not None
    )
    lines += ["", f"dead letters on the topic: {len(letters)} (of no hostile input: {len(unmatched)})"]
    lines += [f"  {count:>5}  {prefix}" for prefix, count in prefixes.most_common()]
    again = Counter(
        f"{hostile.path} {hostile.category}: {letter.reason[:90]}"
        for hostile in inputs
        for letter in hostile.letters[1:]
    )
    if again:
        lines += ["", "inputs dead-lettered more than once (the later letter):"]
        lines += [f"  {count:>5}  {what}" for what, count in again.most_common(10)]
    statuses: Counter[int] = Counter()
    for (_, status), count in adversary.statuses.items():
        statuses[status] += count
    lines += [
        "",
        "HTTP answers by status: " + ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items())),
        f"5xx answers: {len(adversary.server_errors)}   requests without an answer: {len(adversary.no_answer)}",
        "crashes: " + (", ".join(f"{name} (exit {code})" for name, code in adversary.crashes.items()) or "0"),
        f"good reminders: expected {len(expected)}, seen {len(set(seen_pairs) & expected)}, lost {len(lost)}, "
        f"duplicated {len(duplicated) + len(twice_decided)}, unexpected {len(unexpected)}",
        f"good shoppers' events in ClickHouse: expected {sum(len(s.message_ids) for s in adversary.shoppers)}, "
        f"missing {sum(map(len, missing_events.values()))}, duplicated {sum(map(len, duplicated_events.values()))}; "
        f"hostile people with event rows: {len(hostile_rows)}",
        f"elapsed: {elapsed:.1f}s (sending {sending:.1f}s)",
        "=" * 82,
    ]
    return lines
