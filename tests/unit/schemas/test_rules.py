from datetime import timedelta
from pathlib import Path

import pytest

from schemas.rules import InvalidRules, RulesConfig, load_rules, parse_rules

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def test_shipped_rules_file_states_the_built_in_defaults():
    assert load_rules(DEPLOY / "rules.yaml") == RulesConfig()


def test_demo_rules_shorten_the_cart_delay():
    assert load_rules(DEPLOY / "rules.demo.yaml").cart_abandonment.delay == timedelta(seconds=15)


def test_durations_read_like_people_write_them():
    rules = parse_rules("cart_abandonment:\n  delay: 2h\ntimers:\n  grace: 1500ms\n")
    assert rules.cart_abandonment.delay == timedelta(hours=2)
    assert rules.timers.grace == timedelta(seconds=1.5)


def test_wrong_value_names_the_line_and_the_field():
    text = "timers:\n  grace: 5s\ncart_abandonment:\n  delay: soon\n  channel: email\n"
    with pytest.raises(InvalidRules, match=r"rules.yaml:4: cart_abandonment.delay: .*") as caught:
        parse_rules(text, "rules.yaml")
    assert "duration" in str(caught.value)


def test_unknown_field_and_bad_channel_are_both_reported():
    text = "cart_abandonment:\n  channel: fax\n  delai: 5m\n"
    with pytest.raises(InvalidRules) as caught:
        parse_rules(text, "r.yaml")
    message = str(caught.value)
    assert "r.yaml:2: cart_abandonment.channel" in message
    assert "r.yaml:3: cart_abandonment.delai: Extra inputs are not permitted" in message


def test_broken_yaml_names_the_line():
    with pytest.raises(InvalidRules, match=r"r.yaml:2: not valid YAML"):
        parse_rules("cart_abandonment:\n\tdelay: 5m\n", "r.yaml")


def test_missing_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(InvalidRules, match="cannot read the rules file"):
        load_rules(tmp_path / "nope.yaml")
