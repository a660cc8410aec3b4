from datetime import timedelta
from pathlib import Path

import pytest

from schemas.rules import DEFAULT_RULES_FILE, InvalidRules, load_rules, parse_rules
from streams.rules.triggers import trigger_rules_by_name

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def test_deploy_rules_file_is_the_shipped_default() -> None:
    assert (DEPLOY / "rules.yaml").resolve() == DEFAULT_RULES_FILE
    rules = load_rules(None)
    assert [rule.name for rule in rules.triggers] == [
        "cart_abandonment", "browse_abandonment", "checkout_abandonment", "welcome_series",
        "win_back", "high_value_win_back", "reorder_reminder", "birthday", "cooling_sms", "post_purchase",
    ]  # fmt: skip
    assert [segment.name for segment in rules.segments] == [
        "priority", "cooling", "inactive_7d", "active_30d", "loyal", "high_value_at_risk", "due_to_reorder",
        "replied_negatively_recently",
    ]  # fmt: skip


def test_demo_rules_shorten_the_cart_delay() -> None:
    rules = load_rules(DEPLOY / "rules.demo.yaml")
    cart = trigger_rules_by_name(rules)["cart_abandonment"]
    assert cart.delay == timedelta(seconds=15)


def test_durations_read_like_people_write_them() -> None:
    rules = parse_rules(
        "timers:\n  grace: 1500ms\ntriggers:\n  - name: t\n    entry: {event: X}\n    delay: 2h\n"
        "    channel: email\n    template_id: t\n"
    )
    assert rules.timers.grace == timedelta(seconds=1.5)
    assert rules.triggers[0].delay == timedelta(hours=2)


def test_wrong_value_names_the_line_and_the_field() -> None:
    text = (
        "triggers:\n  - name: cart\n    entry: {event: Product Added}\n"
        "    delay: soon\n    channel: email\n    template_id: x\n"
    )
    with pytest.raises(InvalidRules, match=r"rules.yaml:4: triggers.0.delay: .*duration") as caught:
        parse_rules(text, "rules.yaml")
    assert "\n" not in str(caught.value)


def test_every_problem_is_reported_with_its_line() -> None:
    text = (
        "segments:\n"
        "  - name: big\n"
        "    all:\n"
        "      - {fact: lifetime_spend, op: '>=', value: 5}\n"
        "triggers:\n"
        "  - name: t\n"
        "    entry: {event: X}\n"
        "    channel: fax\n"
        "    template_id: t\n"
        "    delai: 5m\n"
    )
    with pytest.raises(InvalidRules) as caught:
        parse_rules(text, "r.yaml")
    message = str(caught.value)
    assert "r.yaml:4: segments.0.all.0: unknown fact 'lifetime_spend'" in message
    assert "r.yaml:8: triggers.0.channel: Input should be 'email' or 'sms'" in message
    assert "r.yaml:10: triggers.0.delai: Extra inputs are not permitted" in message


def test_a_trigger_on_an_unknown_segment_is_refused() -> None:
    text = "triggers:\n  - name: t\n    entry: {segment: vip}\n    channel: sms\n    template_id: t\n"
    with pytest.raises(InvalidRules, match="trigger t enters on unknown segment vip"):
        parse_rules(text, "r.yaml")


def test_entry_needs_exactly_one_kind() -> None:
    text = "triggers:\n  - name: t\n    entry: {event: X, segment: y}\n    channel: sms\n    template_id: t\n"
    with pytest.raises(InvalidRules, match=r"r.yaml:3: triggers.0.entry: entry needs exactly one"):
        parse_rules(text, "r.yaml")


def test_broken_yaml_names_the_line() -> None:
    with pytest.raises(InvalidRules, match=r"r.yaml:2: not valid YAML"):
        parse_rules("cart_abandonment:\n\tdelay: 5m\n", "r.yaml")


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidRules, match="cannot read the rules file"):
        load_rules(tmp_path / "nope.yaml")


SEND_TIME_RULE = "triggers:\n  - name: t\n    entry: {event: X}\n    channel: email\n    template_id: t\n"


def test_send_time_best_reads_its_window_with_the_duration_parser() -> None:
    rules = parse_rules(SEND_TIME_RULE + "    send_time: best\n    send_window: 1d\n", "r.yaml")
    assert rules.triggers[0].send_time == "best" and rules.triggers[0].send_window == timedelta(days=1)
    assert rules.policy.population_best_hour == 10
    assert parse_rules(SEND_TIME_RULE).triggers[0].send_time == "now"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("    send_time: soonish\n", r"r.yaml:6: triggers.0.send_time: Input should be 'now' or 'best'"),
        ("    send_time: best\n", r"r.yaml:2: triggers.0: send_time best needs `send_window`, e.g. 24h"),
        ("    send_window: 24h\n", r"r.yaml:2: triggers.0: `send_window` is only for `send_time: best`"),
        (
            "    send_time: best\n    send_window: 30m\n",
            r"r.yaml:7: triggers.0.send_window: send_window must be between 1h and 1w, not 30m",
        ),
        (
            "    send_time: best\n    send_window: 2w\n",
            r"r.yaml:7: triggers.0.send_window: send_window must be between 1h and 1w, not 2w",
        ),
        ("    send_time: best\n    send_window: a day\n", r"r.yaml:7: triggers.0.send_window: .*duration"),
        (
            "    send_time: best\n    send_window: 24h\n    local_time: '09:00'\n",
            r"r.yaml:2: triggers.0: `send_time: best` and `local_time` both choose the hour: give one",
        ),
    ],
)
def test_a_bad_send_time_is_refused_with_the_line_and_the_reason(lines: str, message: str) -> None:
    with pytest.raises(InvalidRules, match=message):
        parse_rules(SEND_TIME_RULE + lines, "r.yaml")


@pytest.mark.parametrize("hour", ["24", "-1", "ten"])
def test_the_population_best_hour_is_an_hour_of_the_day(hour: str) -> None:
    with pytest.raises(InvalidRules, match=r"r.yaml:2: policy.population_best_hour: "):
        parse_rules(f"policy:\n  population_best_hour: {hour}\n", "r.yaml")
