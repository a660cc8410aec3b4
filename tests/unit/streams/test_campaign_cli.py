"""`nudgeflow campaign check`, and what `list` and `cancel` make of the control topic's records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.campaigns import CampaignOp, control_message, parse_campaign
from schemas.rules import parse_rules
from streams.cli.app import main
from streams.cli.campaign import latest_controls

RULES = """
segments:
  - name: subscribers
    all: [{fact: has_email, op: "==", value: true}]
"""
CAMPAIGN = """id: news
audience: {segments: [subscribers]}
when: {day: 2026-12-24, local_time: "10:00"}
channel: email
template_id: news
"""


@dataclass
class Record:
    key: bytes | None
    value: bytes | None


def check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> int:
    rules, campaign = tmp_path / "rules.yaml", tmp_path / "news.yaml"
    rules.write_text(RULES)
    campaign.write_text(text)
    monkeypatch.setenv("NUDGEFLOW_RULES_FILE", str(rules))
    return main(["campaign", "check", str(campaign)])


def test_a_good_campaign_file_is_described(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(tmp_path, monkeypatch, CAMPAIGN) == 0
    expected = f"{tmp_path / 'news.yaml'}: ok (campaign news: email news to subscribers, 2026-12-24 10:00:00 local)\n"
    assert capsys.readouterr().out == expected


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (("channel: email", "channel: pigeon"), "news.yaml:4: channel: Input should be 'email' or 'sms'"),
        (("[subscribers]", "[subscribers, vip]"), "news.yaml: audience names unknown segments: vip"),
        (('local_time: "10:00"', 'at: "2026-12-24T10:00:00Z"'), "news.yaml:3: when: when needs exactly one of `at`"),
    ],
)
def test_a_bad_campaign_file_is_refused_with_the_line_and_the_reason(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    change: tuple[str, str],
    reason: str,
) -> None:
    assert check(tmp_path, monkeypatch, CAMPAIGN.replace(*change)) == 1
    assert reason in capsys.readouterr().err


def test_the_latest_valid_message_of_each_campaign_is_its_state_and_a_cancel_keeps_the_campaign() -> None:
    campaign = parse_campaign(CAMPAIGN, "news.yaml", parse_rules(RULES))
    moment = datetime(2026, 12, 1, tzinfo=UTC)
    records = [
        Record(b"news", control_message(CampaignOp.SCHEDULE, "news", moment, campaign)),
        Record(b"junk", b"{not json"),
        Record(b"news", control_message(CampaignOp.CANCEL, "news", moment)),
    ]
    latest = latest_controls(records)
    assert list(latest) == ["news"]
    assert latest["news"].op == "cancel" and latest["news"].campaign == campaign


def test_the_shipped_example_campaign_checks_against_the_shipped_rules_and_has_its_templates(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from schemas.campaigns import load_campaign
    from schemas.rules import load_rules
    from sinks.sender.templates import Templates

    example = Path(__file__).parents[3] / "deploy" / "campaigns" / "winter_sale.yaml"
    monkeypatch.delenv("NUDGEFLOW_RULES_FILE", raising=False)
    assert main(["campaign", "check", str(example)]) == 0
    assert "winter-sale-2026" in capsys.readouterr().out
    campaign = load_campaign(example, load_rules(None))
    templates = Templates()
    for part in ("html", "txt"):
        assert set(templates.index[(campaign.template_id, part)]) == {"", "zh"}, part
