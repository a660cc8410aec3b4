"""Templates: locale fallback, the sandbox and StrictUndefined, `templates check` naming file, line and
reason, the shipped templates for every default rule, and what a hostile trigger turns into."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.consent import CONFIRMATION_TEMPLATE, Confirmation, read_confirmation_token
from schemas.rules import load_rules
from schemas.settings import Settings
from schemas.triggers import Channel, Trigger
from schemas.unsubscribe import InvalidToken, Unsubscribe, make_token, read_token
from sinks.sender.messages import OutgoingEmail, OutgoingSms, Undeliverable, compose, with_opt_out
from sinks.sender.templates import TemplateFailure, Templates, builtin_directory, check_directory, locale_chain

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SETTINGS = Settings(demo=True, sender={"from_email": "nudges@shop.example", "public_url": "https://c.example/"})


def trigger(**changes: object) -> Trigger:
    fields: dict[str, object] = {
        "trigger_id": "f" * 32,
        "rule": "cart_abandonment",
        "person_id": "shopper-000042",
        "channel": Channel.EMAIL,
        "template_id": "cart_abandonment",
        "due_at": NOW,
        "fired_at": NOW,
        "address": "ada@shop.example",
        "locale": "en-US",
        "context": {
            "cart_id": "cart-1",
            "name": "Ada Lovelace",
            "value": 39.0,
            "items": [{"product_id": "sku-6", "name": "Yoga mat", "price": 39.0, "url": "https://shop.example/p/6"}],
        },
    }
    return Trigger.model_validate({**fields, **changes})


def test_locales_fall_back_from_the_most_specific_to_the_default() -> None:
    assert locale_chain("zh_CN") == ["zh-cn", "zh", ""]
    assert locale_chain(None) == [""]
    templates = Templates()
    assert templates.choose("cart_abandonment", "html", "zh-CN") == ("cart_abandonment.zh.html", "zh")
    assert templates.choose("cart_abandonment", "html", "fr-FR") == ("cart_abandonment.html", "")
    with pytest.raises(TemplateFailure, match="no template 'nope'"):
        templates.choose("nope", "html", "en")


def test_every_default_rule_has_its_templates_in_english_and_chinese() -> None:
    templates = Templates()
    rules = load_rules(None)
    for rule in rules.triggers:
        ids = {step.template_id for step in rule.schedule} | {v.template_id for v in rule.variants if v.template_id}
        parts = ("html", "txt") if rule.channel is Channel.EMAIL else ("sms",)
        for template_id in ids:
            for part in parts:
                assert set(templates.index[(template_id, part)]) == {"", "zh"}, (template_id, part)
    assert check_directory(builtin_directory()) == []


def test_an_email_is_rendered_in_the_person_s_language_with_the_unsubscribe_link() -> None:
    email = compose(SETTINGS, Templates(), trigger(locale="zh-CN"), NOW)
    assert isinstance(email, OutgoingEmail)
    assert email.subject == "您的购物车里还有商品" and email.locale == "zh"
    assert "Ada\uff0c您好" in email.text and "Yoga mat" in email.html and '<html lang="zh">' in email.html
    assert email.unsubscribe_url.startswith("https://c.example/unsubscribe/")
    request = read_token(email.unsubscribe_url.rsplit("/", 1)[1], SETTINGS.hash_key, NOW)
    assert request == Unsubscribe("shopper-000042", "email", request.expires, "f" * 32)
    assert request.expires == int((NOW + timedelta(days=60)).timestamp())
    assert email.unsubscribe_url in email.text and email.unsubscribe_url in email.html


def test_a_confirmation_message_carries_its_signed_link_until_the_core_s_deadline() -> None:
    deadline = NOW + timedelta(hours=48)
    confirmation = trigger(
        rule=CONFIRMATION_TEMPLATE,
        template_id=CONFIRMATION_TEMPLATE,
        person_id="ada/lovelace",  # any person id: quoted into the path
        context={"confirm_by": deadline.isoformat(), "name": "Ada Lovelace"},
        expires_at=deadline,
    )
    links = []
    for locale, subject in [("en", "Please confirm your subscription"), ("zh-CN", "请确认您的订阅")]:
        email = compose(SETTINGS, Templates(), confirmation.model_copy(update={"locale": locale}), NOW)
        assert isinstance(email, OutgoingEmail) and email.subject == subject
        (link,) = set(re.findall(r"https://c\.example/confirm/\S+?(?=[\s\"<])", email.text + " " + email.html))
        links.append(link)
    person, token = links[0].removeprefix("https://c.example/confirm/").split("/")
    assert person == "ada%2Flovelace"
    assert read_confirmation_token(token, SETTINGS.hash_key, NOW) == Confirmation(
        "ada/lovelace", "email", int(deadline.timestamp()), "f" * 32
    )
    plain = compose(SETTINGS, Templates(), trigger(), NOW)
    assert isinstance(plain, OutgoingEmail) and "/confirm/" not in plain.text + plain.html


def test_sms_ends_with_the_opt_out_of_its_language() -> None:
    english = compose(
        SETTINGS, Templates(), trigger(channel="sms", template_id="win_back", address="+14155550142"), NOW
    )
    chinese = compose(
        SETTINGS, Templates(), trigger(channel="sms", template_id="win_back", address="+14155550142", locale="zh"), NOW
    )
    assert isinstance(english, OutgoingSms) and isinstance(chinese, OutgoingSms)
    assert english.body.endswith(" Reply STOP to opt out") and english.body.startswith("Ada, we miss you")
    assert chinese.body.endswith("回复TD退订")
    assert "trigger_id=" + "f" * 32 in english.status_callback and "person_id=shopper-000042" in english.status_callback
    assert len(with_opt_out("x" * 5000, "en")) == 1600 and with_opt_out("x" * 5000, "en").endswith("opt out")


def test_a_hostile_context_is_escaped_bounded_and_stripped_of_other_links() -> None:
    hostile = trigger(
        context={
            "cart_id": "c",
            "name": '<img src=x onerror="alert(1)">\r\nBcc: all@example.com',
            "items": [{"product_id": "p", "name": "<b>", "url": "javascript:alert(1)", "price": -1, "quantity": "9"}]
            * 80,
            "value": "lots",
        }
    )
    email = compose(SETTINGS, Templates(), hostile, NOW)
    assert isinstance(email, OutgoingEmail)
    assert "<img src=x" not in email.html and "&lt;img" in email.html and "javascript:" not in email.html
    assert email.html.count("<tr>") == 50  # items are bounded
    assert "\n" not in email.subject
    mime = email.mime().decode()
    assert "\nBcc:" not in mime


@pytest.mark.parametrize(
    ("rule", "template_id", "context"),
    [
        ("cart_abandonment", "cart_abandonment", {"cart_id": "c", "items": [{"product_id": "sku-6"}]}),
        ("cart_abandonment", "cart_abandonment_discount", {"cart_id": "c", "items": [{"product_id": "sku-6"}]}),
        (
            "post_purchase",
            "post_purchase_thanks",
            {"order": {"order_id": "o-1", "products": [{"product_id": "sku-6"}]}},
        ),
    ],
)
def test_recommended_products_show_as_you_may_also_like_escaped_and_only_when_there_are_some(
    rule: str, template_id: str, context: dict[str, object]
) -> None:
    recommended = {**context, "recommended": ["sku-7", "<script>x</script>"]}
    email = compose(SETTINGS, Templates(), trigger(rule=rule, template_id=template_id, context=recommended), NOW)
    assert isinstance(email, OutgoingEmail)
    assert "You may also like" in email.html and "<li>sku-7</li>" in email.html
    assert "&lt;script&gt;" in email.html and "<script>" not in email.html
    assert "You may also like:\n- sku-7\n- <script>x</script>" in email.text  # the text part is not HTML
    chinese = compose(SETTINGS, Templates(), trigger(rule=rule, template_id=template_id, context=recommended,
                                                     locale="zh"), NOW)  # fmt: skip
    assert isinstance(chinese, OutgoingEmail) and "您可能还喜欢" in chinese.html and "您可能还喜欢" in chinese.text
    plain = compose(SETTINGS, Templates(), trigger(rule=rule, template_id=template_id, context=context), NOW)
    assert isinstance(plain, OutgoingEmail)
    assert "You may also like" not in plain.html and "You may also like" not in plain.text


@pytest.mark.parametrize(
    ("address", "channel"), [("no-at-sign", "email"), ("a@b.c\r\nRCPT TO:<x@y.z>", "email"), ("555-1234", "sms")]
)
def test_an_invalid_address_is_undeliverable(address: str, channel: str) -> None:
    template = "cart_abandonment" if channel == "email" else "win_back"
    with pytest.raises(Undeliverable):
        compose(SETTINGS, Templates(), trigger(address=address, channel=channel, template_id=template), NOW)


def test_a_template_that_needs_what_the_trigger_lacks_fails_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("Subject: hi\n\n{{ product.name }}\n")
    (tmp_path / "t.html").write_text("<p>{{ product.name }}</p>\n")
    with pytest.raises(TemplateFailure) as failure:
        compose(SETTINGS, Templates(tmp_path), trigger(template_id="t"), NOW)
    assert failure.value.problem.file == "t.txt" and failure.value.problem.line == 3


def test_check_names_the_file_the_line_and_the_reason(tmp_path: Path) -> None:
    (tmp_path / "a.html").write_text("<p>\n{{ persn.name }}\n</p>\n")
    (tmp_path / "b.sms").write_text("ok\n{% if %}\n")
    (tmp_path / "c.txt").write_text("Subject: x\n\n{{ person.nme }}\n")
    (tmp_path / "c.html").write_text("{{ person.name }}")
    (tmp_path / "d.txt").write_text("no subject line\n")
    (tmp_path / "e.zh.sms").write_text("只有中文\n")
    (tmp_path / "f.html").write_text("{{ ''.__class__ }}")  # the sandbox refuses internals
    (tmp_path / "notes.md").write_text("not a template")
    problems = {(p.file, p.line): p.reason for p in check_directory(tmp_path)}
    assert problems[("a.html", 2)] == "unknown variable 'persn'"
    assert problems[("b.sms", 2)].startswith("syntax error")
    assert "has no attribute 'nme'" in problems[("c.txt", 3)]
    assert problems[("d.txt", 1)] == "the first line must be 'Subject: ...'"
    assert "no e.sms to fall back on" in problems[("e.zh.sms", None)]
    assert "no a.txt beside it" in problems[("a.html", None)]
    assert ("f.html", 1) in problems
    assert "name is not" in problems[("notes.md", None)]


def test_unsubscribe_tokens_cannot_be_forged_altered_or_used_late() -> None:
    key = b"k"
    token = make_token(Unsubscribe("p1", "email", int(NOW.timestamp()) + 60, "t"), key)
    assert read_token(token, key, NOW).person_id == "p1"
    mac = token.split(".")[1]
    other = make_token(Unsubscribe("p2", "email", int(NOW.timestamp()) + 60, "t"), key).split(".")[0]
    for bad, reason in [
        (f"{other}.{mac}", "signature"),
        (token, "signature"),  # under another key
        ("garbage", "malformed"),
        ("a.b.c", "malformed"),
        ("x" * 5000, "longer"),
    ]:
        with pytest.raises(InvalidToken, match=reason):
            read_token(bad, b"other" if bad == token else key, NOW)
    with pytest.raises(InvalidToken, match="expired"):
        read_token(token, key, NOW + timedelta(minutes=2))
