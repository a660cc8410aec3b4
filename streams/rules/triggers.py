"""Trigger rules: when a nudge is scheduled (entry), cancelled (exit), allowed again (re-entry), and what
it carries when it comes due (address, context). The arm a person gets is `variants`; birthday reminders are
scheduled by `birthdays`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from msgspec.structs import replace

from schemas.events import Event
from schemas.limits import Limits
from schemas.rules import Exit, Reentry, RulesConfig, TriggerRule
from schemas.segments import SegmentChange
from schemas.triggers import Channel, Trigger, make_trigger_id
from streams.rules.bounds import bounded_context, short_text
from streams.rules.carts import DEFAULT_CART, cart_context
from streams.rules.compiled import per_rules
from streams.rules.person import PendingTrigger, PersonState, slot_key
from streams.rules.recommendations import NO_RECOMMENDATIONS, Recommendations, recommended_for
from streams.rules.variants import choose_variant

Pending = dict[str, PendingTrigger]


def _key_of(rule: TriggerRule, properties: Mapping[str, Any]) -> str:
    if rule.key is None:
        return DEFAULT_CART if rule.context == "cart" else "-"
    value = properties.get(rule.key)
    return str(value) if value not in (None, "") else (DEFAULT_CART if rule.context == "cart" else "-")


def _may_enter(state: PersonState, pending: Pending, rule: TriggerRule, key: str, moment: datetime) -> bool:
    slot = slot_key(rule.name, key)
    if rule.reentry is Reentry.EVERY_TIME:
        return True
    if rule.reentry is Reentry.ONCE:
        return rule.name not in state.fired and not any(p.rule == rule.name for p in pending.values())
    if rule.reentry is Reentry.ONCE_PER_KEY:
        return slot not in state.fired
    last = state.fired.get(rule.name)
    assert rule.reentry_period is not None
    return last is None or moment - last >= rule.reentry_period


def reentry_allows_firing(state: PersonState, rule: TriggerRule, waiting: PendingTrigger) -> bool:
    """Re-entry is checked again when a nudge comes due: several keys can enter before the first one fires
    (three products viewed in a minute), and a rule allowed once a week must still send one."""
    if waiting.step > 0 or rule.reentry is Reentry.EVERY_TIME:
        return True
    if rule.reentry is Reentry.ONCE:
        return rule.name not in state.fired
    if rule.reentry is Reentry.ONCE_PER_KEY:
        return waiting.slot not in state.fired
    last = state.fired.get(rule.name)
    assert rule.reentry_period is not None
    return last is None or waiting.due_at - last >= rule.reentry_period


def fire_moment(due: datetime, entered_at: datetime, rules: RulesConfig) -> datetime:
    """When a nudge due at `due` fires: after the grace for late events, which could still cancel it; at once
    when it was due the moment it was entered (nothing can cancel a zero delay)."""
    return due + rules.timers.grace if due > entered_at else due


def _deadlines(rule: TriggerRule, step: int, entered_at: datetime, rules: RulesConfig) -> tuple[datetime, datetime]:
    """When a step entered at `entered_at` is due, and when it fires."""
    due = entered_at + rule.schedule[step].delay
    return due, fire_moment(due, entered_at, rules)


def _schedule(
    rule: TriggerRule, key: str, step: int, entered_at: datetime, rules: RulesConfig, **extra: Any
) -> PendingTrigger:
    due, fire_at = _deadlines(rule, step, entered_at, rules)
    return PendingTrigger(
        rule=rule.name, key=key, step=step, entered_at=entered_at, due_at=due, fire_at=fire_at, **extra
    )


def _enter(
    state: PersonState,
    pending: Pending,
    rule: TriggerRule,
    key: str,
    moment: datetime,
    rules: RulesConfig,
    cause: str | None,
    context: dict[str, Any],
    limits: Limits,
) -> None:
    slot = slot_key(rule.name, key)
    current = pending.get(slot)
    if current is not None:
        if rule.restart_on_repeat and not current.deferred:
            due, fire_at = _deadlines(rule, current.step, moment, rules)
            pending[slot] = replace(
                current,
                due_at=max(current.due_at, due),
                fire_at=max(current.fire_at, fire_at),
                context=context or current.context,
            )
        return
    # Past limits.pending a person waits for enough already: a flood of keys (products viewed) enters no more.
    if len(pending) < limits.pending and _may_enter(state, pending, rule, key, moment):
        bounded = bounded_context(context, limits)
        pending[slot] = _schedule(rule, key, 0, moment, rules, cause_event_id=cause, context=bounded)


# What a sender needs to show a product; the rest of the tracker's properties stays out of the state.
PRODUCT_FIELDS = ("product_id", "name", "price", "url", "image_url", "category")
ORDER_FIELDS = ("order_id", "cart_id", "revenue", "total", "currency")


def _picked(document: Mapping[str, Any], fields: tuple[str, ...], limits: Limits) -> dict[str, Any]:
    picked = {name: short_text(document.get(name), limits) for name in fields}
    return {name: value for name, value in picked.items() if value is not None}


def _entry_context(rule: TriggerRule, event: Event, limits: Limits) -> dict[str, Any]:
    if rule.context == "product":
        return {"product": _picked(event.properties, PRODUCT_FIELDS, limits)}
    if rule.context == "order":
        products = event.properties.get("products")
        order = _picked(event.properties, ORDER_FIELDS, limits)
        if isinstance(products, list):
            order["products"] = [_picked(p, PRODUCT_FIELDS, limits) for p in products if isinstance(p, dict)]
        return {"order": order}
    return {}


@dataclass(frozen=True)
class EventRules:
    """The trigger rules an event name concerns, in the rules' order."""

    exits: tuple[tuple[TriggerRule, Exit], ...] = ()  # every rule with an exit on it, enabled or not
    entries: tuple[TriggerRule, ...] = ()  # enabled rules it enters


@per_rules
def rules_by_event(rules: RulesConfig) -> dict[str, EventRules]:
    """Event name -> the rules it exits and enters; most events concern one rule or none."""
    names = {exit_rule.event for rule in rules.triggers for exit_rule in rule.exit}
    names.update(rule.entry.event for rule in rules.triggers if rule.entry.event is not None)
    return {
        name: EventRules(
            exits=tuple(
                (rule, exit_rule) for rule in rules.triggers for exit_rule in rule.exit if exit_rule.event == name
            ),
            entries=tuple(rule for rule in rules.triggers if rule.enabled and rule.entry.event == name),
        )
        for name in names
    }


@per_rules
def trigger_rules_by_name(rules: RulesConfig) -> dict[str, TriggerRule]:
    """Rule name -> rule, for every trigger that waits or fires."""
    return {rule.name: rule for rule in rules.triggers}


def pending_after_event(state: PersonState, event: Event, rules: RulesConfig, limits: Limits) -> Pending:
    """Exits first (an order cancels the reminders it settles), then entries for this event."""
    pending = dict(state.pending)
    if event.type != "track" or not event.event:
        return pending
    concerned = rules_by_event(rules).get(event.event)
    if concerned is None:
        return pending
    moment = event.timestamp
    for rule, exit_rule in concerned.exits:
        key = event.properties.get(rule.key) if (exit_rule.match and rule.key) else None
        for slot, waiting in list(pending.items()):
            settles = waiting.rule == rule.name and (key is None or waiting.key == str(key))
            if settles and waiting.entered_at <= moment:
                del pending[slot]
    for rule in concerned.entries:
        if _matches(rule.entry.where, event.properties):
            key = _key_of(rule, event.properties)
            context = _entry_context(rule, event, limits)
            _enter(state, pending, rule, key, moment, rules, event.message_id, context, limits)
    return pending


def _matches(where: Mapping[str, Any], properties: Mapping[str, Any]) -> bool:
    # Most entries have no conditions: that case costs no generator.
    return not where or all(properties.get(name) == value for name, value in where.items())


def pending_after_segment_changes(
    state: PersonState, pending: Pending, changes: Iterable[SegmentChange], rules: RulesConfig, limits: Limits
) -> Pending:
    """The pending triggers, with the entries of the enabled rules that enter on a segment just entered."""
    entered = [change for change in changes if change.change == "enter"]
    if not entered:
        return pending  # the usual case; callers never change a pending mapping in place
    updated = dict(pending)
    for change in entered:
        for rule in rules.triggers:
            if rule.enabled and rule.entry.segment == change.segment:
                context = {"segment": change.segment}
                _enter(state, updated, rule, change.segment, change.at, rules, None, context, limits)
    return updated


def build_trigger(
    state: PersonState,
    waiting: PendingTrigger,
    rule: TriggerRule,
    now: datetime,
    recommendations: Recommendations = NO_RECOMMENDATIONS,
) -> Trigger | None:
    """The trigger a due pending entry becomes, or None when there is nothing left to nudge about.

    A nudge about a cart, a product or an order carries `recommended`: the products often bought with or
    after the cart's items, the product or the order's products (`recommendations`, the runner's map of the
    recommendations topic), leaving out what the person bought; no key when there are none."""
    context: dict[str, Any] = {**waiting.context, "key": waiting.key}
    seeds: list[str] = []
    if rule.context == "cart":
        items = state.carts.get(waiting.key, {})
        if not items:
            return None  # the cart was emptied meanwhile
        context.update(cart_id=waiting.key, **cart_context(items))
        seeds = list(items)
    if rule.context == "product":
        product_id = waiting.context.get("product", {}).get("product_id")
        seeds = [str(product_id)] if product_id else []
    if rule.context == "order":
        seeds = [str(p.get("product_id")) for p in waiting.context.get("order", {}).get("products", [])]
        ordered = set(seeds)
        context["cross_sell"] = [pid for pid in state.profile.recently_viewed if pid not in ordered][:3]
    step = rule.schedule[waiting.step]
    variant = choose_variant(state.person_id, rule)
    template = next((v.template_id for v in rule.variants if v.name == variant and v.template_id), step.template_id)
    profile = state.profile
    if profile.name:
        context["name"] = profile.name  # for the greeting of the sender's templates
    address = profile.email if rule.channel is Channel.EMAIL else profile.phone
    occurrence_key = f"{waiting.key}#{waiting.step}" if len(rule.schedule) > 1 else waiting.key
    trigger_id = make_trigger_id(rule.name, state.person_id, occurrence_key, waiting.entered_at)
    # Added once the id is made: a nudge keeps its id (and its dedupe) whatever the latest recommendations say.
    if seeds and recommendations:
        recommended = recommended_for(seeds, recommendations, excluded=state.bought_products)
        if recommended:
            context["recommended"] = recommended
    return Trigger(
        trigger_id=trigger_id,
        rule=rule.name,
        person_id=state.person_id,
        channel=rule.channel,
        template_id=template,
        due_at=waiting.due_at,
        fired_at=now,
        cause_event_id=waiting.cause_event_id,
        variant=variant,
        address=address,
        locale=profile.locale,
        expires_at=waiting.due_at + rule.expires_after if rule.expires_after else None,
        context=context,
    )


def next_step(waiting: PendingTrigger, rule: TriggerRule, rules: RulesConfig) -> PendingTrigger | None:
    """The next step of a series after `waiting`, or None after its last."""
    if waiting.step + 1 >= len(rule.schedule):
        return None
    return _schedule(
        rule, waiting.key, waiting.step + 1, waiting.entered_at, rules,
        cause_event_id=waiting.cause_event_id, context=waiting.context,
    )  # fmt: skip
