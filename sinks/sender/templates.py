"""Message templates: one directory, a file per template_id and part, per-locale variants with fallback.

File names are `<template_id>[.<locale>].<part>`:

- `.html`: the HTML part of an email, autoescaped;
- `.txt`: the text part of an email, whose first line is `Subject: ...`, then a blank line, then the body;
- `.sms`: an SMS body, plain text.

A nudge for locale `zh-CN` uses `cart_abandonment.zh-cn.html`, else `cart_abandonment.zh.html`, else
`cart_abandonment.html`. Files whose names start with `_` are layouts and macros for `{% extends %}` and
`{% import %}`, never chosen themselves.

Templates run in Jinja2's sandbox with StrictUndefined: a template reaches only the variables the sender
gives it (`KNOWN_VARIABLES`, see `sinks/sender/messages.py`), and a missing one fails the nudge with the
file and line instead of sending a blank. `check_directory` finds the same faults before deployment.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

EMAIL_PARTS = ("html", "txt")
SMS_PART = "sms"
PARTS = frozenset({*EMAIL_PARTS, SMS_PART})
# What every template may name; messages.template_context builds exactly these.
KNOWN_VARIABLES = frozenset(
    {
        "person",
        "items",
        "cart",
        "product",
        "order",
        "cross_sell",
        "recommended",
        "segment",
        "trigger",
        "locale",
        "unsubscribe_url",
        "confirm_url",
    }
)
DEFAULT_LOCALE = "en"
SUBJECT_PREFIX = "Subject:"
_NAME = re.compile(
    r"^(?P<id>[A-Za-z0-9_-]+)(?:\.(?P<locale>[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*))?\.(?P<part>html|txt|sms)$"
)


def builtin_directory() -> Path:
    """The templates shipped with nudgeflow: every default rule's template_id in English and Chinese."""
    return Path(str(resources.files("sinks.sender") / "default_templates"))


def locale_chain(locale: str | None) -> list[str]:
    """Locales to try, most specific first, ending with "" (the file without a locale): zh_CN -> zh-cn, zh, ""."""
    chain: list[str] = []
    if locale:
        parts = locale.strip().replace("_", "-").lower().split("-")
        for end in range(len(parts), 0, -1):
            candidate = "-".join(parts[:end])
            if candidate and re.fullmatch(r"[a-z0-9-]+", candidate) and candidate not in chain:
                chain.append(candidate)
    chain.append("")
    return chain


def money(value: Any) -> str:
    """A price as 1,234.50; anything that is not a number as it is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    return f"{value:,.2f}"


@dataclass(frozen=True)
class Problem:
    """A fault in one template file: where it is and why."""

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}" if self.line else f"{self.file}: {self.reason}"


class TemplateFailure(Exception):
    """A nudge whose template could not be chosen or rendered; permanent for that nudge."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True)
class RenderedEmail:
    """An email rendered from its templates."""

    subject: str
    html: str
    text: str
    locale: str  # the locale of the files used ("" for the default ones)


@dataclass(frozen=True)
class RenderedSms:
    """An SMS rendered from its template."""

    body: str
    locale: str


def environment(directory: Path) -> SandboxedEnvironment:
    """The sandboxed Jinja environment the templates in `directory` render in."""
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(directory)),
        undefined=StrictUndefined,
        # HTML parts escape every value; text and SMS parts are not HTML, so escaping would garble them.
        autoescape=lambda name: name is not None and name.endswith(".html"),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters["money"] = money
    return env


class Templates:
    """The templates of one directory, indexed by (template_id, part) -> locale -> file name."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or builtin_directory()
        if not self.directory.is_dir():
            raise FileNotFoundError(f"templates directory {self.directory} does not exist")
        self.env = environment(self.directory)
        self.index: dict[tuple[str, str], dict[str, str]] = {}
        for path in sorted(self.directory.iterdir()):
            found = _NAME.match(path.name)
            if found and not path.name.startswith("_"):
                locale = (found["locale"] or "").lower()
                self.index.setdefault((found["id"], found["part"]), {})[locale] = path.name

    def template_ids(self, part: str) -> set[str]:
        return {template_id for template_id, found in self.index if found == part}

    def choose(self, template_id: str, part: str, locale: str | None) -> tuple[str, str]:
        """The file to use and its locale, or TemplateFailure when the template_id has none for this part."""
        variants = self.index.get((template_id, part), {})
        for candidate in locale_chain(locale):
            if candidate in variants:
                return variants[candidate], candidate
        raise TemplateFailure(Problem(f"{template_id}.{part}", None, f"no template {template_id!r} for .{part}"))

    def render_file(self, name: str, context: Mapping[str, Any]) -> str:
        try:
            return self.env.get_template(name).render(context)
        except TemplateSyntaxError as error:
            raise TemplateFailure(Problem(error.filename or name, error.lineno, error.message or str(error))) from None
        except Exception as error:  # a template may fail in any way its expressions can; it fails alone
            raise TemplateFailure(failure_in(error, self.directory, name)) from None

    def render_email(self, template_id: str, locale: str | None, context: Mapping[str, Any]) -> RenderedEmail:
        # The text part decides the locale, so the subject and both parts are in one language.
        text_name, chosen = self.choose(template_id, "txt", locale)
        html_name = self.index.get((template_id, "html"), {}).get(chosen)
        if html_name is None:
            raise TemplateFailure(Problem(text_name, None, f"no HTML part beside it ({_sibling(text_name, 'html')})"))
        subject, text = split_subject(self.render_file(text_name, context), text_name)
        return RenderedEmail(subject, self.render_file(html_name, context), text, chosen)

    def render_sms(self, template_id: str, locale: str | None, context: Mapping[str, Any]) -> RenderedSms:
        name, chosen = self.choose(template_id, SMS_PART, locale)
        return RenderedSms(" ".join(self.render_file(name, context).split()), chosen)


def _sibling(name: str, part: str) -> str:
    return name.rsplit(".", 1)[0] + "." + part


def split_subject(rendered: str, name: str) -> tuple[str, str]:
    """(subject, body) of a rendered text part; its first line is `Subject: ...`."""
    first, _, rest = rendered.lstrip("\n").partition("\n")
    if not first.startswith(SUBJECT_PREFIX):
        raise TemplateFailure(Problem(name, 1, f"the first line must be '{SUBJECT_PREFIX} ...'"))
    # A header is one line: whatever a value brought in (newlines, runs of blanks) is folded to one space.
    subject = " ".join(first[len(SUBJECT_PREFIX) :].split())
    if not subject:
        raise TemplateFailure(Problem(name, 1, "the subject is empty"))
    return subject, rest.lstrip("\n").rstrip() + "\n"


def failure_in(error: BaseException, directory: Path, name: str) -> Problem:
    """The template file and line an exception was raised from (Jinja rewrites tracebacks to template lines)."""
    root = str(directory.resolve())
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if frame.filename.startswith(root):
            return Problem(Path(frame.filename).name, frame.lineno, _reason(error))
    return Problem(name, None, _reason(error))


def _reason(error: BaseException) -> str:
    kind = type(error).__name__
    return f"{kind}: {error}" if kind != "UndefinedError" else f"unknown variable or attribute: {error}"


# --- checking a directory before it is deployed -------------------------------------------------------


def sample_contexts() -> Iterator[dict[str, Any]]:
    """Contexts as the sender builds them, with every value a template may use; checks render with each."""
    items = [
        {
            "product_id": "sku-0001",
            "name": "Trail running shoes",
            "price": 119.0,
            "quantity": 1,
            "url": "https://shop.example/p/sku-0001",
            "image_url": "https://shop.example/i/sku-0001.jpg",
        }
    ]
    full: dict[str, Any] = {
        "person": {"id": "shopper-000042", "name": "Ada Lovelace", "first_name": "Ada"},
        "items": items,
        "cart": {"id": "cart-1", "value": 119.0, "items": items},
        "product": {**items[0], "category": "shoes"},
        "order": {"order_id": "order-1", "revenue": 119.0, "total": 119.0, "currency": "USD", "products": items},
        "cross_sell": ["sku-0002"],
        "recommended": ["sku-0003", "sku-0004"],
        "segment": "inactive_7d",
        "trigger": {
            "id": "0" * 32,
            "rule": "cart_abandonment",
            "variant": "reminder",
            "template_id": "cart_abandonment",
            "channel": "email",
        },
        "locale": "en",
        "unsubscribe_url": "https://collector.example/unsubscribe/token",
        "confirm_url": "https://collector.example/confirm/shopper-000042/token",
    }
    yield full
    yield {**full, "person": {"id": "shopper-000042", "name": None, "first_name": None}}


def _undeclared(env: SandboxedEnvironment, tree: nodes.Template) -> list[tuple[str, int]]:
    unknown = sorted(meta.find_undeclared_variables(tree) - KNOWN_VARIABLES)
    lines: dict[str, int] = {}
    for name_node in tree.find_all(nodes.Name):
        if name_node.name in unknown and name_node.ctx == "load":
            lines.setdefault(name_node.name, name_node.lineno)
    return [(name, lines.get(name, 0)) for name in unknown]


def check_directory(directory: Path) -> list[Problem]:
    """Every fault of the directory's templates: syntax, unknown variables, failing renders, missing parts."""
    if not directory.is_dir():
        return [Problem(str(directory), None, "not a directory")]
    env = environment(directory)
    problems: list[Problem] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        found = _NAME.match(path.name)
        if found is None and not path.name.startswith("_"):
            problems.append(Problem(path.name, None, "name is not <template_id>[.<locale>].html|txt|sms"))
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            problems.append(Problem(path.name, None, f"not UTF-8: {error}"))
            continue
        try:
            tree = env.parse(source, path.name, str(path))
        except TemplateSyntaxError as error:
            problems.append(Problem(path.name, error.lineno, f"syntax error: {error.message}"))
            continue
        problems.extend(
            Problem(path.name, line or None, f"unknown variable {name!r}") for name, line in _undeclared(env, tree)
        )
        if path.name.startswith("_") or any(p.file == path.name for p in problems):
            continue
        for context in sample_contexts():
            try:
                rendered = env.get_template(path.name).render(context)
                if path.name.endswith(".txt"):
                    split_subject(rendered, path.name)
            except TemplateFailure as failure:
                problems.append(failure.problem)
                break
            except TemplateSyntaxError as error:  # in a layout or macro file it uses
                problems.append(Problem(error.name or path.name, error.lineno, f"syntax error: {error.message}"))
                break
            except (TemplateError, Exception) as error:  # a sample render fails as a nudge's would
                problems.append(failure_in(error, directory, path.name))
                break
    problems.extend(_missing_parts(directory))
    return problems


def _missing_parts(directory: Path) -> list[Problem]:
    """An email needs both parts in each locale, and every template_id a file without a locale to fall back on."""
    templates = Templates(directory)
    problems = []
    for (template_id, part), variants in sorted(templates.index.items()):
        if "" not in variants:
            some = next(iter(variants.values()))
            problems.append(Problem(some, None, f"no {template_id}.{part} to fall back on for other locales"))
        if part in EMAIL_PARTS:
            other = "txt" if part == "html" else "html"
            for locale, name in sorted(variants.items()):
                if locale not in templates.index.get((template_id, other), {}):
                    problems.append(Problem(name, None, f"no {_sibling(name, other)} beside it: an email needs both"))
    return problems
