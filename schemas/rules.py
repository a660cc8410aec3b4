"""The rules configuration: which nudges exist, their delays and channels. Loaded from YAML, validated here."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from schemas.triggers import Channel

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _parse_duration(value: object) -> object:
    """Accept "15s", "30m", "2h", "1d", "1w" besides what pydantic takes (seconds, ISO 8601)."""
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    return value


Duration = Annotated[timedelta, BeforeValidator(_parse_duration)]


class RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CartAbandonmentRule(RuleModel):
    """A Product Added with no Order Completed for the same cart within `delay` fires one nudge."""

    enabled: bool = True
    delay: Duration = Field(default=timedelta(minutes=30), gt=timedelta(0))
    channel: Channel = Channel.EMAIL
    template_id: str = "cart_abandonment"


class TimerPolicy(RuleModel):
    """How long a deadline waits for late events before it fires (event time, DESIGN principle 2)."""

    grace: Duration = Field(default=timedelta(seconds=5), ge=timedelta(0))


class RulesConfig(RuleModel):
    timers: TimerPolicy = TimerPolicy()
    cart_abandonment: CartAbandonmentRule = CartAbandonmentRule()


class InvalidRules(ValueError):
    """A rules file that cannot be used, with the line and the reason."""


def _line_of(root: yaml.Node | None, location: tuple[int | str, ...]) -> int | None:
    # Walk the YAML node tree along the pydantic error location to find the 1-based line.
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in location:
        if isinstance(node, yaml.MappingNode):
            match = next((value for key, value in node.value if key.value == part), None)
            if match is None:
                key_node = next((key for key, _ in node.value if key.value == part), None)
                return key_node.start_mark.line + 1 if key_node is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def parse_rules(text: str, source: str = "<rules>") -> RulesConfig:
    try:
        root = yaml.compose(text)
        document: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise InvalidRules(f"{where}: not valid YAML: {getattr(error, 'problem', error)}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise InvalidRules(f"{source}:1: the rules file must be a mapping, not {type(document).__name__}")
    try:
        return RulesConfig.model_validate(document)
    except ValidationError as error:
        problems = []
        for problem in error.errors(include_url=False):
            location = problem["loc"]
            field = ".".join(str(part) for part in location) or "(top level)"
            problems.append(f"{source}:{_line_of(root, location)}: {field}: {problem['msg']}")
        raise InvalidRules("\n".join(problems)) from None


def load_rules(path: Path | None) -> RulesConfig:
    """The rules in `path`, or the built-in defaults when no file is given."""
    if path is None:
        return RulesConfig()
    try:
        text = path.read_text()
    except OSError as error:
        raise InvalidRules(f"{path}: cannot read the rules file: {error.strerror}") from None
    return parse_rules(text, str(path))
