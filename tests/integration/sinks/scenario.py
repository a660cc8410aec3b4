"""A small shop with known answers: what the analytics tests produce onto the topics and then expect."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from kafka import KafkaProducer

from schemas.segments import SegmentChange
from schemas.settings import Settings
from schemas.triggers import Channel, Suppression, SuppressionReason, Trigger, make_trigger_id


def track(name: str, person: str, moment: datetime, **properties: Any) -> bytes:
    return orjson.dumps(
        {
            "type": "track",
            "event": name,
            "userId": person,
            "messageId": str(uuid.uuid4()),
            "timestamp": moment.isoformat(),
            "properties": properties,
        }
    )


def nudge(rule: str, person: str, moment: datetime, variant: str | None) -> Trigger:
    return Trigger(
        trigger_id=make_trigger_id(rule, person, "k", moment),
        rule=rule,
        person_id=person,
        channel=Channel.EMAIL,
        template_id=f"{rule}-1",
        due_at=moment,
        fired_at=moment,
        variant=variant,
    )


@dataclass
class Scenario:
    base: datetime
    events: list[tuple[str, bytes]] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)
    suppressions: list[Suppression] = field(default_factory=list)
    segments: list[SegmentChange] = field(default_factory=list)

    def send(self, producer: KafkaProducer, settings: Settings) -> None:
        for person, value in self.events:
            producer.send(settings.events_topic, key=person.encode(), value=value)
        for trigger in self.triggers:
            producer.send(settings.triggers_topic, key=trigger.person_id.encode(), value=trigger.to_json())
        for held in self.suppressions:
            producer.send(settings.suppressed_topic, key=held.trigger.person_id.encode(), value=held.to_json())
        for change in self.segments:
            producer.send(settings.segments_topic, key=change.person_id.encode(), value=change.to_json())
        producer.flush(timeout=30)

    @property
    def expected_counts(self) -> dict[str, int]:
        return {
            "events": len(self.events),
            "triggers": len(self.triggers),
            "suppressions": len(self.suppressions),
            "segment_changes": len(self.segments),
        }


def shop(now: datetime) -> Scenario:
    """cart_abandonment control (p1-p4) against b (p5-p8); p1 also got a browse nudge before ordering.

    control: 4 sent, 4 delivered, 2 opened, 1 clicked, 1 converted (p1, 100; last touch goes to browse).
    b: 4 sent, 3 delivered (p8 bounced), 3 opened, 2 clicked, 1 unsubscribed, 1 converted (p5, 50);
       p6 orders 30 ten days later, outside the 7-day window.
    p9 ordered twice ten days apart 90 days ago (at churn risk); suppressions: 2 quiet hours, 1 cap.
    """
    base = now - timedelta(days=20)
    s = Scenario(base)

    def event(name: str, person: str, at: datetime, **properties: Any) -> None:
        s.events.append((person, track(name, person, at, **properties)))

    s.triggers = [nudge("cart_abandonment", f"p{i}", base, "control" if i <= 4 else "b") for i in range(1, 9)]
    browse = nudge("browse_abandonment", "p1", base + timedelta(hours=12), None)
    s.triggers.append(browse)
    by_person = {t.person_id: t for t in s.triggers[:8]}
    feedback = {
        "Email Delivered": ["p1", "p2", "p3", "p4", "p5", "p6", "p7"],
        "Email Opened": ["p1", "p2", "p5", "p6", "p7"],
        "Email Clicked": ["p1", "p5", "p6"],
        "Email Bounced": ["p8"],
        "Email Unsubscribed": ["p7"],
    }
    for name, people in feedback.items():
        for person in people:
            event(name, person, base + timedelta(hours=1), trigger_id=by_person[person].trigger_id)
    for i in range(1, 9):
        event("Product Viewed", f"p{i}", base - timedelta(hours=2), product_id="sku-1")
    for i in range(1, 6):
        event("Product Added", f"p{i}", base - timedelta(hours=1), product_id="sku-1", price=10.0)
    for person in ("p1", "p2", "p5"):
        event("Checkout Started", person, base - timedelta(minutes=30))
    event("Signed Up", "p1", base - timedelta(days=1))
    event("Order Completed", "p1", base + timedelta(days=1), order_id="o1", revenue=100.0)
    event("Order Completed", "p5", base + timedelta(days=2), order_id="o5", revenue=50.0)
    event("Order Completed", "p6", base + timedelta(days=10), order_id="o6", revenue=30.0)
    event("Order Completed", "p9", now - timedelta(days=100), order_id="o9a", revenue=20.0)
    event("Order Completed", "p9", now - timedelta(days=90), order_id="o9b", revenue=20.0)
    s.suppressions = [
        Suppression(
            trigger=nudge("cart_abandonment", "q1", base, "b"), reason=SuppressionReason.QUIET_HOURS, decided_at=base
        ),
        Suppression(
            trigger=nudge("cart_abandonment", "q2", base, "b"), reason=SuppressionReason.QUIET_HOURS, decided_at=base
        ),
        Suppression(
            trigger=nudge("cart_abandonment", "q3", base, None), reason=SuppressionReason.FREQUENCY_CAP, decided_at=base
        ),
    ]
    s.segments = [
        SegmentChange(person_id="p1", segment="vip", change="enter", at=base - timedelta(days=3)),
        SegmentChange(person_id="p2", segment="vip", change="enter", at=base - timedelta(days=3)),
        SegmentChange(person_id="p2", segment="vip", change="exit", at=base - timedelta(days=2)),
        SegmentChange(person_id="p3", segment="vip", change="enter", at=base + timedelta(hours=5)),
    ]
    return s
