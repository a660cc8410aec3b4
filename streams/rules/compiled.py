"""Work derived from the rules alone (compiled segment tests, triggers by event name), done once per rules
object instead of on every event: the worker loads its rules once and applies them to millions of events."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from schemas.rules import RulesConfig

Derived = TypeVar("Derived")

# Rules objects remembered per derivation; a handful covers the worker (one) and the tests (a few at a time).
KEPT = 16


def per_rules(derive: Callable[[RulesConfig], Derived]) -> Callable[[RulesConfig], Derived]:
    """`derive`, remembered per rules object.

    RulesConfig is frozen but holds lists, so it cannot be hashed: the key is its identity, and each entry
    holds the rules themselves so that identity is not reused by another object while remembered."""
    remembered: dict[int, tuple[RulesConfig, Derived]] = {}

    @functools.wraps(derive)
    def derived(rules: RulesConfig) -> Derived:
        entry = remembered.get(id(rules))
        if entry is not None and entry[0] is rules:
            return entry[1]
        if len(remembered) >= KEPT:
            remembered.clear()
        value = derive(rules)
        remembered[id(rules)] = (rules, value)
        return value

    return derived
