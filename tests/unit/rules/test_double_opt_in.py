"""Double opt-in, decided by the pure core: an email opt-in waits for the click on its confirmation link."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from schemas.consent import CONFIRMATION_TEMPLATE
from schemas.events import Event
from schemas.profile import ConsentSource, ConsentState
from streams.rules.consent import RESEND_AFTER, DoubleOptIn
from tests.unit.factories import Feed, at, identify, shipped_rules

POLICY = DoubleOptIn(email=True, link_valid_for=timedelta(hours=48))


def confirm(minutes: float, confirmation_id: str, person: str = "p1", **context: Any) -> Event:
    """What the collector's confirmation endpoint publishes once it has checked the link."""
    return Event.model_validate(
        {
            "type": "identify",
            "userId": person,
            "messageId": f"confirm-{confirmation_id}-{minutes}",
            "timestamp": at(minutes).isoformat(),
            "traits": {"email_consent": "opted_in"},
            "properties": {"trigger_id": confirmation_id},
            "context": {"consentSource": "confirmation_link", "channel": "email", **context},
        }
    )


def asked(feed: Feed, minutes: float = 0, email: str = "ada@example.com") -> str:
    feed.event(identify(minutes, email=email, email_consent="opted_in", name="Ada Lovelace"))
    (message,) = feed.fired(CONFIRMATION_TEMPLATE)[-1:]
    return message.trigger_id


def test_an_opt_in_waits_and_a_confirmation_message_goes_out_with_its_deadline() -> None:
    feed = Feed(shipped_rules(), opt_in=POLICY)
    confirmation_id = asked(feed)
    (message,) = feed.fired(CONFIRMATION_TEMPLATE)
    assert (message.template_id, message.channel, message.address) == (
        CONFIRMATION_TEMPLATE,
        "email",
        "ada@example.com",
    )
    assert message.context["confirm_by"] == (at(0) + timedelta(hours=48)).isoformat()
    assert message.expires_at == at(0) + timedelta(hours=48)
    assert "email" not in feed.state.profile.consent
    assert "email_consent" not in feed.state.profile.traits  # no trait says otherwise to a segment
    assert feed.consent_changes == []  # nothing changed yet
    assert feed.state.waiting_confirmations["email"].confirmation_id == confirmation_id


def test_the_click_opts_in_with_its_evidence() -> None:
    feed = Feed(shipped_rules(), opt_in=POLICY)
    confirmation_id = asked(feed)
    feed.event(confirm(60, confirmation_id, ip="203.0.113.7", userAgent="Mozilla/5.0"))
    assert feed.state.profile.consent["email"] == ConsentState.OPTED_IN
    assert feed.state.waiting_confirmations == {}
    (change,) = feed.consent_changes
    assert (change.state, change.source, change.ip, change.user_agent) == (
        ConsentState.OPTED_IN,
        ConsentSource.CONFIRMATION_LINK,
        "203.0.113.7",
        "Mozilla/5.0",
    )
    assert change.trigger_id == confirmation_id


def test_a_click_after_the_deadline_for_another_confirmation_or_another_address_changes_nothing() -> None:
    late = Feed(shipped_rules(), opt_in=POLICY)
    confirmation_id = asked(late)
    late.event(confirm(48 * 60 + 1, confirmation_id))
    other = Feed(shipped_rules(), opt_in=POLICY)
    asked(other)
    other.event(confirm(5, "not-the-one-sent"))
    moved = Feed(shipped_rules(), opt_in=POLICY)
    confirmation_id = asked(moved)
    moved.event(identify(5, email="someone-else@example.com"))  # the link proved the old address only
    moved.event(confirm(6, confirmation_id))
    for feed in (late, other, moved):
        assert "email" not in feed.state.profile.consent
        assert feed.consent_changes == []


def test_a_repeated_request_sends_one_link_per_interval_and_an_opt_out_drops_the_waiting_one() -> None:
    feed = Feed(shipped_rules(), opt_in=POLICY)
    first = asked(feed)
    feed.event(identify(1, email_consent="opted_in"))
    assert len(feed.fired(CONFIRMATION_TEMPLATE)) == 1
    later = RESEND_AFTER.total_seconds() / 60 + 1
    feed.event(identify(later, email_consent="opted_in"))
    second = feed.fired(CONFIRMATION_TEMPLATE)[-1].trigger_id
    assert second != first and feed.state.waiting_confirmations["email"].confirmation_id == second
    feed.event(confirm(later + 1, first))  # the older link no longer opts in
    assert "email" not in feed.state.profile.consent
    feed.event(identify(later + 2, email_consent="opted_out"))
    assert feed.state.waiting_confirmations == {}
    feed.event(confirm(later + 3, second))
    assert feed.state.profile.consent["email"] == ConsentState.OPTED_OUT


def test_without_the_policy_an_opt_in_is_direct_and_no_confirmation_goes_out() -> None:
    feed = Feed(shipped_rules())
    feed.event(identify(0, email="ada@example.com", email_consent="opted_in"))
    assert feed.state.profile.consent["email"] == ConsentState.OPTED_IN
    assert feed.fired(CONFIRMATION_TEMPLATE) == []


def test_an_sms_opt_in_and_an_opt_in_without_an_address_send_nothing() -> None:
    feed = Feed(shipped_rules(), opt_in=POLICY)
    feed.event(identify(0, phone="+14155552671", sms_consent="opted_in", email_consent="opted_in"))
    assert feed.state.profile.consent == {"sms": ConsentState.OPTED_IN}  # the email one waits for an address
    assert feed.fired(CONFIRMATION_TEMPLATE) == []
