"""SMS replies understood: the profile keeps the last reply's sentiment, and a negative one pauses promotions."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas.encoding import encode
from schemas.events import InvalidEvent, parse_event
from schemas.profile import Profile, ReplySentiment
from schemas.rules import InvalidRules, ProfileConfig
from streams.rules.facts import profile_facts
from streams.rules.person import PersonState
from streams.rules.profiles import update_profile
from tests.unit.factories import Feed, at, days, identify, rules_from, shipped_rules, track

CONFIG = ProfileConfig()


def reply(minutes: float, sentiment: str, body: str = "a reply", **extra: Any) -> Any:
    return track("SMS Replied", minutes, body=body, sentiment=sentiment, sentimentScore=0.0, **extra)


def build(*events: Any) -> Profile:
    profile = Profile(person_id="p1")
    for event in events:
        profile = update_profile(profile, event, CONFIG)
    return profile


def test_the_profile_keeps_the_last_reply_and_the_last_negative_one_by_event_time() -> None:
    profile = build(reply(10, "negative"), reply(days(2), "neutral"), reply(60, "positive"))  # the last one is late
    assert not isinstance(profile.replies, type(None))
    facts = profile_facts(profile, at(days(3)), CONFIG)
    assert facts["last_reply_sentiment"] == "neutral"  # the latest by event time, not the last to arrive
    assert facts["days_since_negative_reply"] == pytest.approx(3 - 10 / 1440, abs=1e-5)
    later = update_profile(profile, reply(days(4), "negative"), CONFIG)
    assert profile_facts(later, at(days(5)), CONFIG)["days_since_negative_reply"] == pytest.approx(1)


def test_without_a_classified_reply_the_facts_are_unset_and_the_state_is_stored_as_before() -> None:
    plain = build(
        track("SMS Replied", 5, body="no label from this producer"), track("Product Viewed", 6, product_id="a")
    )
    facts = profile_facts(plain, at(10), CONFIG)
    assert facts["last_reply_sentiment"] is None and facts["days_since_negative_reply"] is None
    assert b"replies" not in encode(PersonState(profile=plain))
    replied = update_profile(plain, reply(7, "positive"), CONFIG)
    stored = PersonState(profile=replied).to_json()
    assert orjson.loads(stored)["profile"]["replies"]["sentiment"] == "positive"
    assert PersonState.from_json(stored).profile.replies == replied.replies
    assert replied.last_negative_reply_at is None


@pytest.mark.parametrize(
    ("properties", "complaint"),
    [
        ({"sentiment": "furious"}, "sentiment"),
        ({"sentiment": "negative", "sentimentScore": 7}, "sentimentScore"),
        ({"sentiment": ["negative"]}, "sentiment"),
    ],
)
def test_a_producer_cannot_set_a_sentiment_outside_the_labels(properties: dict[str, Any], complaint: str) -> None:
    # A producer writing Kafka directly: the worker parses with the same validation and dead-letters it.
    document = {
        "type": "track",
        "event": "SMS Replied",
        "userId": "p1",
        "timestamp": at(0).isoformat(),
        "properties": {"body": "love it", **properties},
    }
    with pytest.raises(InvalidEvent, match=complaint):
        parse_event(orjson.dumps(document))


def sms_person(feed: Feed) -> None:
    feed.event(identify(0, phone="+14155552671", sms_consent="opted_in"))


def test_a_negative_reply_pauses_the_promotions_for_a_week() -> None:
    feed = Feed(shipped_rules())
    sms_person(feed)
    feed.event(reply(1, ReplySentiment.NEGATIVE.value, body="stop texting me"))
    assert "replied_negatively_recently" in feed.state.segments
    feed.event(track("Product Viewed", 2, product_id="shoe"))
    feed.tick(40)  # browse_abandonment's 30 minutes, and its grace, have passed
    assert feed.fired("browse_abandonment") == []
    assert feed.reasons("browse_abandonment") == ["paused"]
    assert "replied_negatively_recently" in feed.suppressed[0].detail

    feed.tick(days(7) + 1.5)  # a week after the reply: out of the segment with no new event
    assert "replied_negatively_recently" not in feed.state.segments
    assert feed.fired() == []
    feed.tick(days(7) + 3)  # a week after the visit, win_back (a promotion too) is no longer paused
    assert [t.rule for t in feed.fired()] == ["win_back"]


def test_a_positive_or_neutral_reply_pauses_nothing() -> None:
    feed = Feed(shipped_rules())
    sms_person(feed)
    feed.event(reply(1, "positive", body="thanks, love it"))
    feed.event(track("Product Viewed", 2, product_id="shoe"))
    feed.tick(40)
    assert "replied_negatively_recently" not in feed.state.segments
    assert [t.rule for t in feed.fired()] == ["browse_abandonment"]


def test_a_rule_paused_in_an_unknown_segment_is_refused() -> None:
    with pytest.raises(InvalidRules, match="paused_in_segments names unknown segment nobody"):
        rules_from(
            "triggers:\n  - {name: r, entry: {event: Signed Up}, channel: email, template_id: t,"
            " paused_in_segments: [nobody]}\n"
        )
