"""Which arm of a rule's test a person gets: stable per person and rule, the holdout first, then the
variants by weight. Campaigns and trigger rules share it."""

from __future__ import annotations

import hashlib

from schemas.rules import TriggerRule
from schemas.triggers import HOLDOUT_VARIANT


def split_point(person_id: str, rule: str) -> float:
    """A stable number in [0, 100) per person and rule: the same person always lands in the same arm."""
    digest = hashlib.sha256(f"{rule}\x1f{person_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def choose_variant(person_id: str, rule: TriggerRule) -> str | None:
    """The variant a person gets of a rule, the same every time: the holdout, one by weight, or None."""
    point = split_point(person_id, rule.name)
    if point < rule.holdout_percent:
        return HOLDOUT_VARIANT
    if not rule.variants:
        return None
    # Spread the rest of [holdout, 100) over the variants by weight.
    position = (point - rule.holdout_percent) / (100 - rule.holdout_percent) * sum(v.weight for v in rule.variants)
    for variant in rule.variants:
        if position < variant.weight:
            return variant.name
        position -= variant.weight
    return rule.variants[-1].name
