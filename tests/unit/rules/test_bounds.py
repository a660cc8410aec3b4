"""Every way a person's state can grow is capped: hostile but valid events cannot make a state too large
to store, and the largest state the caps allow stays far below the broker's record limit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from schemas.limits import DEFAULT_LIMITS, Limits
from schemas.profile import ConsentState, DayCounts, Profile, SeenRange
from schemas.triggers import CartItem, Channel
from streams.rules.bounds import bounded_context, bounded_history
from streams.rules.person import PendingTrigger, PersonState, SentRecord
from tests.unit.factories import Feed, added, at, identify, shipped_rules, track

RULES = shipped_rules()
# Kafka's default record limit (message.max.bytes): a stored state must stay far below it.
BROKER_RECORD_LIMIT = 1_048_588


def test_forty_identify_calls_adding_new_traits_keep_the_newest_within_the_caps() -> None:
    feed = Feed(RULES)
    for call in range(40):
        feed.event(identify(call, **{f"trait_{call}_{n}": "x" * 300 for n in range(10)}))
    traits = feed.state.profile.traits
    assert len(traits) <= DEFAULT_LIMITS.traits
    assert len(orjson.dumps(traits)) <= DEFAULT_LIMITS.traits_bytes
    assert "trait_39_9" in traits and "trait_0_0" not in traits  # the newest win


def test_a_repeated_trait_counts_as_recently_set() -> None:
    limits = Limits(traits=8)
    feed = Feed(RULES)
    state = feed.state
    from streams.rules.engine import Surroundings, apply_event
    from streams.rules.person import SourcePosition

    events = [identify(0, **{f"t{n}": n for n in range(8)}), identify(1, t0="again"), identify(2, fresh=1)]
    for offset, event in enumerate(events):
        state = apply_event(
            state, event, SourcePosition(topic="events", partition=0, offset=offset), RULES, Surroundings(limits)
        ).state
    assert list(state.profile.traits) == ["t2", "t3", "t4", "t5", "t6", "t7", "t0", "fresh"]


def test_carts_and_their_items_are_capped_least_recent_first() -> None:
    feed = Feed(RULES)
    for index in range(DEFAULT_LIMITS.cart_items + 15):
        feed.event(added(index, product=f"sku-{index}", cart="c1"))
    for cart in range(DEFAULT_LIMITS.carts + 3):
        feed.event(added(100 + cart, product="sku-x", cart=f"other-{cart}"))
    assert len(feed.state.carts) == DEFAULT_LIMITS.carts
    assert "c1" not in feed.state.carts  # the least recently touched cart went first
    feed = Feed(RULES)
    for index in range(DEFAULT_LIMITS.cart_items + 15):
        feed.event(added(index, product=f"sku-{index}", cart="c1"))
    items = feed.state.carts["c1"]
    assert len(items) == DEFAULT_LIMITS.cart_items
    assert "sku-0" not in items and f"sku-{DEFAULT_LIMITS.cart_items + 14}" in items


def test_a_product_name_or_url_too_long_to_keep_is_left_out_of_the_cart() -> None:
    feed = Feed(RULES)
    feed.event(track("Product Added", 1, product_id="p", cart_id="c", name="n" * 600, url="https://shop/p", price=1.0))
    item = feed.state.carts["c"]["p"]
    assert item.name is None and item.url == "https://shop/p"


def test_a_flood_of_viewed_products_makes_at_most_the_pending_limit_of_reminders() -> None:
    feed = Feed(RULES)
    feed.event(identify(0, email="p@example.com"))
    for index in range(200):
        feed.event(track("Product Viewed", 1 + index / 100, product_id=f"sku-{index}", name="Thing", price=3.0))
    assert 0 < len(feed.state.pending) <= DEFAULT_LIMITS.pending


def test_a_repeated_message_id_changes_nothing() -> None:
    feed = Feed(RULES)
    first = feed.event(
        added(1, message_id="m-1") if False else track("Product Added", 1, message_id="m-1", product_id="a", price=2.0)
    )
    again = feed.event(track("Product Added", 2, message_id="m-1", product_id="a", price=2.0))
    assert first.applied and not again.applied and again.repeated
    assert feed.state.carts["default"]["a"].quantity == 1
    assert feed.state.profile.event_count == 1


def test_message_ids_are_remembered_up_to_the_limit() -> None:
    feed = Feed(RULES)
    for index in range(DEFAULT_LIMITS.message_ids + 10):
        feed.event(track("Logged In", index, message_id=f"m-{index}"))
    assert len(feed.state.recent_messages) == DEFAULT_LIMITS.message_ids
    assert not feed.event(track("Logged In", 500, message_id=f"m-{DEFAULT_LIMITS.message_ids + 9}")).applied
    assert feed.event(track("Logged In", 501, message_id="m-0")).applied  # forgotten: offsets guard replays


def test_a_context_over_its_bytes_keeps_the_products_that_fit_then_only_identifiers() -> None:
    limits = Limits(context_bytes=600)
    products = [{"product_id": f"p{n}", "name": "x" * 100} for n in range(20)]
    order = bounded_context({"order": {"order_id": "o1", "products": products}}, limits)
    assert len(orjson.dumps(order)) <= 600 and 0 < len(order["order"]["products"]) < 20
    product = bounded_context({"product": {"product_id": "p", "name": "x" * 1000, "url": "y" * 1000}}, limits)
    assert product == {"product": {"product_id": "p"}}


def test_rule_history_keeps_the_newest_per_key_entries_and_every_per_rule_entry() -> None:
    fired = {f"rule|k{n}": at(n) for n in range(300)} | {"rule": at(0), "other": at(1)}
    kept = bounded_history(fired, Limits(rule_history=256))
    assert len([slot for slot in kept if "|" in slot]) == 256
    assert "rule|k0" not in kept and "rule|k299" in kept and {"rule", "other"} <= set(kept)


def largest_state(limits: Limits) -> PersonState:
    """A state with every capped collection full of values as long as the limits let them be."""
    ident = "i" * limits.id_length
    text = "t" * limits.string_length
    short = "s" * limits.stored_text_length
    huge = limits.number_magnitude
    moment = at(0)
    trait_value = "v" * 100
    traits: dict[str, Any] = {}
    for n in range(limits.traits):
        candidate = {**traits, f"{n:03d}" + "k" * 20: trait_value}
        if len(orjson.dumps(candidate)) > limits.traits_bytes:
            break
        traits = candidate
    profile = Profile(
        person_id=ident,
        identified=True,
        anonymous_ids=[f"{n:03d}{ident[3:]}" for n in range(limits.anonymous_ids)],
        first_seen=moment,
        last_seen=moment,
        channels={name: SeenRange(first=moment, last=moment) for name in ("web", "app", "email", "sms")},
        days={
            (moment - timedelta(days=n)).date().isoformat(): DayCounts(
                views=int(huge), adds=int(huge), orders=int(huge), revenue=huge
            )
            for n in range(90)
        },
        event_count=int(huge),
        order_count=int(huge),
        revenue=huge,
        first_order_at=moment,
        last_order_at=moment,
        engagement=huge,
        engagement_at=moment,
        unopened_emails=int(huge),
        last_email_sent_at=moment,
        last_email_open_at=moment,
        last_email_click_at=moment,
        last_login_at=moment,
        last_visit_at=moment,
        email=text,
        phone=text,
        name=text,
        birthday=text,
        timezone=text,
        locale=text,
        consent={"email": ConsentState.OPTED_OUT, "sms": ConsentState.OPTED_OUT},
        traits=traits,
        recently_viewed=[f"{n:03d}{ident[3:]}" for n in range(50)],  # the rules file allows at most 50
    )
    item = {"name": short, "price": huge, "quantity": int(huge), "url": short, "image_url": short}
    carts = {
        f"{c}{ident[1:]}": {
            f"{n:03d}{ident[3:]}": CartItem(product_id=f"{n:03d}{ident[3:]}", **item) for n in range(limits.cart_items)
        }
        for c in range(limits.carts)
    }
    longest_rule = max((rule.name for rule in RULES.triggers), key=len)
    context_value = "c" * (limits.context_bytes - 40)
    pending = {
        f"{longest_rule}|{n:03d}{ident[3:]}": PendingTrigger(
            rule=longest_rule,
            key=f"{n:03d}{ident[3:]}",
            step=9,
            entered_at=moment,
            due_at=moment,
            fire_at=moment,
            cause_event_id=ident,
            context={"product": {"product_id": context_value}},
            deferred=True,
        )
        for n in range(limits.pending)
    }
    fired = {rule.name: moment for rule in RULES.triggers}
    fired.update({f"{longest_rule}|{n:03d}{ident[3:]}": moment for n in range(limits.rule_history)})
    sent = [SentRecord(trigger_id="f" * 32, channel=Channel.EMAIL, at=moment) for _ in range(limits.sent_records)]
    topics = ("events", "identity", "privacy", "clock")
    return PersonState(
        profile=profile,
        carts=carts,
        pending=pending,
        fired=fired,
        sent=sent,
        segments={segment.name: moment for segment in RULES.segments},
        segment_check_at=moment,
        merged_into=None,
        contact_of=[f"{n:03d}{ident[3:]}" for n in range(limits.persons_per_contact)],
        recent_messages=["d" * 24 for _ in range(limits.message_ids)],
        bought=[f"{n:03d}{ident[3:]}" for n in range(limits.bought_products)],
        applied_offsets={
            f"a-namespace-of-sixty-characters-for-every-topic.{t}/{p}": 2**62 for t in topics for p in range(64)
        },
    )


def test_the_largest_state_the_caps_allow_is_far_below_the_broker_record_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = largest_state(DEFAULT_LIMITS)
    size = len(state.to_json())
    with capsys.disabled():
        print(f"\nlargest stored state the default caps allow: {size} bytes ({size / 1024:.0f} KiB)")
    assert size < BROKER_RECORD_LIMIT / 2
    assert PersonState.from_json(state.to_json()) == state
