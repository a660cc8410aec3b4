"""The SMS reply classifier: accuracy on labelled replies in English and Chinese, bounded input, empty text."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from schemas.limits import DEFAULT_LIMITS
from schemas.profile import ReplySentiment
from streams.collector.sentiment import NO_SENTIMENT, classify_reply, is_chinese

DATA = Path(__file__).parent / "data"
# The word lists were written with sms_replies.tsv in view; sms_replies_holdout.tsv was written after they
# were frozen, so its figure is the honest one. Floors a little under what was measured (0.98 and 0.87 per
# language), so a change that loses a few replies fails.
FLOORS = {"sms_replies.tsv": 0.9, "sms_replies_holdout.tsv": 0.8}


def labelled(name: str) -> list[tuple[str, str, str]]:
    rows = []
    for line in (DATA / name).read_text().splitlines():
        if line and not line.startswith("#"):
            language, label, text = line.split("\t")
            rows.append((language, label, text))
    return rows


def accuracy(rows: list[tuple[str, str, str]]) -> tuple[dict[str, float], list[str]]:
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    report = []
    for language, label, text in rows:
        got = classify_reply(text).label.value
        for key in (language, f"{language} {label}"):
            total[key] += 1
            right[key] += got == label
    for key in sorted(total):
        report.append(f"{key:<12} {right[key]:>3}/{total[key]:<3} {right[key] / total[key]:.2f}")
    return {key: right[key] / total[key] for key in total}, report


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_accuracy_per_language_is_above_its_floor(name: str) -> None:
    rows = labelled(name)
    scores, report = accuracy(rows)
    print(f"\n{name}: accuracy per language and label\n" + "\n".join(report))
    assert {language for language, _, _ in rows} == {"en", "zh"}
    for language in ("en", "zh"):
        assert scores[language] >= FLOORS[name], report


def test_every_label_is_found_in_both_languages() -> None:
    scores, report = accuracy(labelled("sms_replies.tsv"))
    for language in ("en", "zh"):
        for label in ReplySentiment:
            assert scores[f"{language} {label.value}"] >= 0.8, report


def test_empty_and_blank_replies_are_neutral() -> None:
    assert classify_reply("") == classify_reply("   \n") == NO_SENTIMENT
    assert NO_SENTIMENT.label is ReplySentiment.NEUTRAL


def test_the_language_is_told_by_script() -> None:
    assert is_chinese("ok 谢谢") and is_chinese("別再發了") and not is_chinese("thanks!")
    assert classify_reply("ok 谢谢").label is ReplySentiment.POSITIVE  # read as Chinese


def test_only_the_first_characters_are_read_so_any_reply_costs_alike() -> None:
    hostile = "love it " * 200_000  # 1.6 million characters, far past any SMS
    started = time.perf_counter()
    sentiment = classify_reply(hostile)
    assert time.perf_counter() - started < 1.0
    assert sentiment.label is ReplySentiment.POSITIVE
    # What lies past the limit is not read: a negative tail does not count.
    cut = DEFAULT_LIMITS.reply_text_length
    assert classify_reply("ok " * (cut // 3 + 1) + "stop texting me").label is ReplySentiment.POSITIVE
    assert classify_reply("stop texting me", most=4).label is ReplySentiment.NEGATIVE  # "stop" alone
    assert classify_reply("别再发了" * 1_000_000).label is ReplySentiment.NEGATIVE


def test_scores_stay_within_minus_one_and_one() -> None:
    for text in ("垃圾" * 500, "谢谢" * 500, "awful terrible horrible " * 50, "great!!! " * 100):
        assert -1 <= classify_reply(text).score <= 1
