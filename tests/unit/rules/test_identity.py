"""Anonymous history joins the known person, deterministically."""

from __future__ import annotations

from schemas.events import Event
from streams.rules.engine import absorb
from streams.rules.identity import anonymous_ids_to_link
from streams.rules.person import SourcePosition
from tests.unit.factories import Feed, added, at, shipped_rules, track

RULES = shipped_rules()


def anonymous_event(name: str, minutes: float, **properties: object) -> Event:
    return track(name, minutes, "anon-1", **properties).model_copy(update={"user_id": None, "anonymous_id": "anon-1"})


def login(minutes: float) -> Event:
    return Event.model_validate(
        {"type": "identify", "userId": "u1", "anonymousId": "anon-1", "timestamp": at(minutes).isoformat(),
         "traits": {"email": "u1@example.com"}, "messageId": "login"}
    )  # fmt: skip


def test_login_links_the_anonymous_id_once() -> None:
    person = Feed(RULES, "u1")
    step = person.event(login(10))
    assert step.links == ["anon-1"]
    assert (
        person.event(
            track("Product Viewed", 11, "u1", product_id="x").model_copy(update={"anonymous_id": "anon-1"})
        ).links
        == []
    )


def test_alias_links_the_previous_id() -> None:
    alias = Event.model_validate({"type": "alias", "userId": "u1", "previousId": "old", "timestamp": at(0).isoformat()})
    assert anonymous_ids_to_link(Feed(RULES, "u1").state, alias) == ["old"]


def test_events_before_login_count_towards_the_person() -> None:
    anonymous = Feed(RULES, "anon-1")
    anonymous.event(anonymous_event("Product Viewed", 1, product_id="sku-1"))
    anonymous.event(added(2, person="anon-1").model_copy(update={"user_id": None, "anonymous_id": "anon-1"}))
    person = Feed(RULES, "u1")
    person.event(login(10))
    person.event(track("Product Viewed", 12, "u1", product_id="sku-2"))
    merged = absorb(person.state, anonymous.state, SourcePosition(topic="identity", partition=0, offset=0), RULES).state
    profile = merged.profile
    assert profile.event_count == 4
    assert profile.first_seen == at(1)
    assert profile.recently_viewed == ["sku-2", "sku-1"]
    assert "anon-1" in profile.anonymous_ids
    assert merged.carts["c1"]["sku-1"].quantity == 1
    # The cart started anonymously now reminds the known person, with their address.
    person.state = merged
    person.tick(40)
    due = [t for t in person.triggers] + [s.trigger for s in person.suppressed]  # sent, or held out
    assert [(t.rule, t.person_id, t.address) for t in due] == [("cart_abandonment", "u1", "u1@example.com")]


def test_merging_is_deterministic_and_applied_once() -> None:
    anonymous = Feed(RULES, "anon-1")
    anonymous.event(anonymous_event("Product Viewed", 1, product_id="sku-1"))
    person = Feed(RULES, "u1")
    person.event(login(10))
    position = SourcePosition(topic="identity", partition=3, offset=7)
    once = absorb(person.state, anonymous.state, position, RULES)
    assert once == absorb(person.state, anonymous.state, position, RULES)
    again = absorb(once.state, anonymous.state, position, RULES)
    assert again.applied is False and again.state == once.state


def test_an_opt_out_given_anonymously_is_kept() -> None:
    anonymous = Feed(RULES, "anon-1")
    anonymous.event(anonymous_event("SMS Replied", 1, body="STOP"))
    person = Feed(RULES, "u1")
    person.event(login(10))
    merged = absorb(person.state, anonymous.state, SourcePosition(topic="identity", partition=0, offset=0), RULES)
    assert merged.state.profile.consent["sms"] == "opted_out"
