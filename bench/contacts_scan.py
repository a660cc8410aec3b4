"""Hashing the email addresses in dead letters' text: the old regex against the scan around each '@'.

    .venv/bin/python bench/contacts_scan.py [--texts 20] [--kilobytes 40] [--repeats 3]

The texts are what made the sink's loop stall: dead letters of about 40 KB whose value is one long run of
letters and digits (a hex dump, a token) without an '@'. The old expression tried every start position
and ran to the end of the run from each, so its time grew with the square of the run; the scan only looks
around each '@'. Also timed: the same texts with an address every 2 KB (both give the same result, checked
here), the scan's worst case (an '@' every 255 characters and no address: each '@' costs a look of at most
64 characters back and 255 ahead), and a whole dead-letter row as the sink makes it now (value cut to
limits.dead_letter_bytes).
Each figure is the fastest of --repeats passes; the old expression on the long runs is timed once, it is
slow enough.
"""

from __future__ import annotations

import argparse
import random
import re
import string
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
from _harness import print_table

from schemas.triggers import DeadLetter
from sinks.clickhouse.digests import hash_email, hash_emails_in_text
from sinks.clickhouse.rows import RowOptions, dead_letter_row

KEY = b"bench-key"
# The expression sinks/clickhouse/digests.py used before the scan, kept here as the baseline.
OLD_EMAIL_IN_TEXT = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")


def old_hash_emails_in_text(text: str) -> str:
    return OLD_EMAIL_IN_TEXT.sub(lambda found: hash_email(found.group(0), KEY), text)


def long_runs(count: int, size: int) -> list[str]:
    """Dead-letter values: a JSON envelope around one run of letters and digits, `size` characters long."""
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits
    return [
        orjson.dumps(
            {"type": "track", "userId": f"u{n}", "properties": {"blob": "".join(rng.choices(alphabet, k=size))}}
        ).decode()
        for n in range(count)
    ]


def with_addresses(count: int, size: int) -> list[str]:
    """Ordinary text with an address every 2 KB."""
    rng = random.Random(11)
    words = ["order", "cart", "checkout", "failed", "retry", "sku-1", "price", "12.50", "ok", "{", "}", ":"]
    texts = []
    for n in range(count):
        parts: list[str] = []
        length = 0
        while length < size:
            word = f"shopper{rng.randrange(10_000)}.{n}@example.com" if length % 2048 < 8 else rng.choice(words)
            parts.append(word)
            length += len(word) + 1
        texts.append(" ".join(parts))
    return texts


def fastest(repeats: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=20, help="dead-letter texts per figure")
    parser.add_argument("--kilobytes", type=int, default=40, help="size of each text")
    parser.add_argument("--repeats", type=int, default=3, help="passes per figure; the fastest counts")
    arguments = parser.parse_args()
    size = arguments.kilobytes * 1024
    runs, mixed = long_runs(arguments.texts, size), with_addresses(arguments.texts, size)
    # The scan's own worst case: an '@' every 255 characters, each with a full local part and domain to read.
    ats = [("@" + "a" * 254) * (size // 255) for _ in range(arguments.texts)]

    for text in [*runs[:2], *mixed, *ats[:1]]:
        assert hash_emails_in_text(text, KEY) == old_hash_emails_in_text(text), "the scan must find the same"
    options = RowOptions(KEY)
    letters = [
        DeadLetter(reason="not JSON", topic="events", partition=0, offset=n, value=text, received_at=datetime.now(UTC))
        .model_dump_json()
        .encode()
        for n, text in enumerate(runs)
    ]

    def scan(texts: list[str]) -> Callable[[], object]:
        return lambda: [hash_emails_in_text(text, KEY) for text in texts]

    def regex(texts: list[str]) -> Callable[[], object]:
        return lambda: [old_hash_emails_in_text(text) for text in texts]

    repeats = arguments.repeats
    figures = [
        ("long runs, no '@'", "old regex", fastest(1, regex(runs))),
        ("long runs, no '@'", "scan", fastest(repeats, scan(runs))),
        ("an address every 2 KB", "old regex", fastest(repeats, regex(mixed))),
        ("an address every 2 KB", "scan", fastest(repeats, scan(mixed))),
        ("an '@' every 255 chars, no address", "old regex", fastest(repeats, regex(ats))),
        ("an '@' every 255 chars, no address", "scan", fastest(repeats, scan(ats))),
        (
            "long runs, whole dead-letter row",
            "scan (value cut to dead_letter_bytes)",
            fastest(repeats, lambda: [dead_letter_row(letter, options) for letter in letters]),
        ),
    ]
    print(f"\nemail addresses hashed in {arguments.texts} dead-letter texts of {arguments.kilobytes} KB")
    print_table(
        ["texts", "how", "seconds", "ms per text"],
        [(texts, how, seconds, 1000 * seconds / arguments.texts) for texts, how, seconds in figures],
    )
    old, new = figures[0][2], figures[1][2]
    print(f"\nlong runs without an '@': {old:.1f} s with the old regex, {1000 * new:.3f} ms with the scan")


if __name__ == "__main__":
    main()
