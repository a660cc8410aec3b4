"""Events and a feed for tests of the pure core, written the way a tracker sends them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.consent import ConsentChange
from schemas.events import Event
from schemas.rules import RulesConfig, load_rules, parse_rules
from schemas.scores import Score
from schemas.segments import SegmentChange
from schemas.triggers import Suppression, Trigger
from streams.rules.consent import NO_DOUBLE_OPT_IN, DoubleOptIn
from streams.rules.engine import Outcome, Surroundings, absorb_score, advance_time, apply_event
from streams.rules.person import PersonState, SourcePosition
from streams.rules.recommendations import NO_RECOMMENDATIONS, Recommendations

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # a Monday, 10:00 UTC


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def days(count: float) -> float:
    """Minutes in `count` days, for at()."""
    return count * 24 * 60


def track(
    event_name: str, minutes: float, person: str = "p1", message_id: str | None = None, **properties: Any
) -> Event:
    return Event.model_validate(
        {
            "type": "track",
            "event": event_name,
            "userId": person,
            "messageId": message_id or f"{person}-{event_name}-{minutes}-{sorted(properties.items())}",
            "timestamp": at(minutes).isoformat(),
            "properties": properties,
        }
    )


def identify(minutes: float, person: str = "p1", **traits: Any) -> Event:
    return Event.model_validate(
        {
            "type": "identify",
            "userId": person,
            "messageId": f"{person}-identify-{minutes}-{sorted(traits.items())}",
            "timestamp": at(minutes).isoformat(),
            "traits": traits,
        }
    )


def added(
    minutes: float, product: str = "sku-1", cart: str | None = "c1", person: str = "p1", price: float = 10.0
) -> Event:
    return track(
        "Product Added", minutes, person, product_id=product, cart_id=cart, price=price, name=f"Item {product}"
    )


def ordered(minutes: float, cart: str | None = "c1", person: str = "p1", revenue: float = 10.0) -> Event:
    properties: dict[str, Any] = {"order_id": f"o-{minutes}", "revenue": revenue}
    if cart is not None:
        properties["cart_id"] = cart
    return track("Order Completed", minutes, person, **properties)


def scores(
    minutes: float, person: str = "p1", clv: float = 300.0, churn: float = 0.7, next_order_in_days: float | None = None
) -> Score:
    """One person's scores from a training run at `minutes`."""
    next_order = None if next_order_in_days is None else at(minutes + days(next_order_in_days)).isoformat()
    return Score.model_validate(
        {
            "personId": person, "modelVersion": f"v{minutes}", "scoredAt": at(minutes).isoformat(),
            "horizonDays": 90, "pAlive": round(1 - churn, 6), "churnRisk": churn, "expectedOrders": 1.0,
            "predictedClv": clv, "purchasePropensity": 0.5, "expectedNextOrderAt": next_order,
        }
    )  # fmt: skip


# The policy of the shipped rules without caps, quiet hours or holdouts, so a test sees one thing at a time.
OPEN_POLICY = "policy:\n  caps: {}\n  quiet_hours: {}\n"


def rules_from(yaml_text: str) -> RulesConfig:
    return parse_rules(yaml_text, "test-rules.yaml")


def shipped_rules() -> RulesConfig:
    return load_rules(None)


class Feed:
    """Applies events and clock ticks to one person in order, as the worker does, collecting the output."""

    def __init__(
        self,
        rules: RulesConfig,
        person: str = "p1",
        opt_in: DoubleOptIn = NO_DOUBLE_OPT_IN,
        recommendations: Recommendations = NO_RECOMMENDATIONS,
    ) -> None:
        self.rules = rules
        self.opt_in = opt_in
        self.recommendations = recommendations  # the runner's map of the recommendations topic
        self.state = PersonState.new(person)
        self.offset = 0
        self.triggers: list[Trigger] = []
        self.suppressed: list[Suppression] = []
        self.segment_changes: list[SegmentChange] = []
        self.consent_changes: list[ConsentChange] = []

    def _position(self, topic: str) -> SourcePosition:
        self.offset += 1
        return SourcePosition(topic=topic, partition=0, offset=self.offset)

    def _collect(self, step: Outcome) -> Outcome:
        self.state = step.state
        self.triggers += step.triggers
        self.suppressed += step.suppressed
        self.segment_changes += step.segment_changes
        self.consent_changes += step.consent_changes
        return step

    def event(self, event: Event) -> Outcome:
        position = self._position("events")
        return self._collect(
            apply_event(
                self.state,
                event,
                position,
                self.rules,
                Surroundings(opt_in=self.opt_in, recommendations=self.recommendations),
            )
        )

    def _around(self, **given: Any) -> Surroundings:
        return Surroundings(recommendations=self.recommendations, **given)

    def tick(self, minutes: float) -> Outcome:
        position = self._position("checks")
        return self._collect(
            advance_time(
                self.state, at(minutes), position, self.rules, Surroundings(recommendations=self.recommendations)
            )
        )

    def score(self, minutes: float, score: Score | None) -> Outcome:
        """A record of the scores topic (None: a tombstone) read when the partition's clock is at `minutes`."""
        return self._collect(absorb_score(self.state, score, at(minutes), self._position("scores"), self.rules))

    def fired(self, rule: str | None = None) -> list[Trigger]:
        return [t for t in self.triggers if rule is None or t.rule == rule]

    def reasons(self, rule: str | None = None) -> list[str]:
        return [s.reason.value for s in self.suppressed if rule is None or s.trigger.rule == rule]
