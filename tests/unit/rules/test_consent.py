"""Proof of consent: each change of a channel's consent comes out of the core once, with its source and evidence."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.consent import ConsentChange
from schemas.events import Event
from schemas.profile import ConsentSource, ConsentState
from tests.unit.factories import Feed, at, identify, shipped_rules, track


def with_context(event: Event, **context: Any) -> Event:
    return event.model_copy(update={"context": event.context.model_copy(update=context)})


def test_an_opt_in_through_the_api_is_recorded_with_its_evidence() -> None:
    feed = Feed(shipped_rules())
    event = with_context(
        identify(0, email="ada@example.com", email_consent="opted_in"),
        ip="203.0.113.7",
        user_agent="Mozilla/5.0",
        consent_source=ConsentSource.FORM,
    )
    feed.event(event)
    (change,) = feed.consent_changes
    assert change == ConsentChange(
        person_id="p1",
        channel="email",
        state=ConsentState.OPTED_IN,
        previous=None,
        source=ConsentSource.FORM,
        at=at(0),
        message_id=event.message_id,
        ip="203.0.113.7",
        user_agent="Mozilla/5.0",
    )


def test_stating_the_same_consent_again_is_no_change() -> None:
    feed = Feed(shipped_rules())
    feed.event(identify(0, email_consent="opted_in"))
    feed.event(identify(5, email_consent="opted_in", name="Ada"))
    assert [(c.state, c.source) for c in feed.consent_changes] == [(ConsentState.OPTED_IN, ConsentSource.API)]


def test_withdrawal_by_link_and_by_sms_keyword_name_their_source_and_nudge() -> None:
    feed = Feed(shipped_rules())
    feed.event(identify(0, email_consent="opted_in", sms_consent="opted_out", phone="+14155552671"))
    unsubscribed = track("Email Unsubscribed", 10, trigger_id="t-42")
    feed.event(with_context(unsubscribed, consent_source=ConsentSource.UNSUBSCRIBE_LINK, ip="198.51.100.1"))
    feed.event(with_context(track("SMS Replied", 20, body=" 订阅 "), consent_source=ConsentSource.SMS_KEYWORD))
    feed.event(track("SMS Replied", 30, body="thanks"))  # not a keyword: nothing changes
    email_out, sms_in = feed.consent_changes[2:]
    assert (email_out.channel, email_out.state, email_out.previous) == ("email", "opted_out", "opted_in")
    assert (email_out.source, email_out.trigger_id, email_out.ip) == ("unsubscribe_link", "t-42", "198.51.100.1")
    assert (sms_in.channel, sms_in.state, sms_in.previous, sms_in.source) == (
        "sms",
        "opted_in",
        "opted_out",
        "sms_keyword",
    )
    assert len(feed.consent_changes) == 4
    assert feed.state.profile.consent == {"email": ConsentState.OPTED_OUT, "sms": ConsentState.OPTED_IN}


STATES = st.sampled_from(["opted_in", "opted_out"])


@settings(deadline=None)  # a whole rule set per example: slow on a loaded machine, and not what is tested
@given(st.lists(st.tuples(st.sampled_from(["email_consent", "sms_consent"]), STATES), max_size=12))
def test_the_records_are_exactly_the_changes_and_a_replay_gives_the_same(statements: list[tuple[str, str]]) -> None:
    events = [identify(minute, **{trait: state}) for minute, (trait, state) in enumerate(statements)]
    live, replayed = Feed(shipped_rules()), Feed(shipped_rules())
    for event in events:
        live.event(event)
    for event in events:
        replayed.event(event)
        replayed.event(event)  # a retry of the same message changes nothing
    assert live.consent_changes == replayed.consent_changes
    seen: dict[str, str] = {}
    expected = []
    for trait, state in statements:
        channel = trait.removesuffix("_consent")
        if seen.get(channel) != state:
            expected.append((channel, state, seen.get(channel)))
            seen[channel] = state
    assert [(c.channel, c.state.value, c.previous and c.previous.value) for c in live.consent_changes] == expected
