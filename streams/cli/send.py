"""`nudgeflow send`: each nudge rendered from its template and delivered once."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from schemas.rules import load_rules
from schemas.settings import Settings
from streams.cli.base import REFUSED, Commands, log, refused


def _sender_template_problems(settings: Settings) -> list[str]:
    """Faults of the templates directory, and template_ids of the rules it has no template for."""
    from sinks.sender.templates import EMAIL_PARTS, SMS_PART, Templates, check_directory

    templates = Templates(settings.sender.templates_dir)
    problems = [str(problem) for problem in check_directory(templates.directory)]
    rules = load_rules(settings.rules_file)
    for rule in rules.triggers:
        part = EMAIL_PARTS[1] if rule.channel.value == "email" else SMS_PART
        wanted = {step.template_id for step in rule.schedule} | {v.template_id for v in rule.variants if v.template_id}
        for template_id in sorted(wanted - templates.template_ids(part)):
            problems.append(f"{templates.directory}: rule {rule.name} needs {template_id}.{part}, which is missing")
    return problems


def command_send(settings: Settings, arguments: argparse.Namespace) -> int:
    """The sender: each nudge on the triggers topic rendered from its template and delivered once."""
    from sinks.analytics.web import start_web
    from sinks.sender.channels import EmailChannel, SmsChannel
    from sinks.sender.channels.sendgrid import SendGridChannel
    from sinks.sender.channels.smtp import SmtpChannel
    from sinks.sender.channels.twilio import TwilioChannel
    from sinks.sender.loop import Sender
    from sinks.sender.metrics import SenderMetrics, web_app
    from sinks.sender.templates import Templates
    from streams.broker.topics import ensure_topics

    if refused(settings, "sender"):
        return REFUSED
    try:
        problems = _sender_template_problems(settings)
    except FileNotFoundError as error:
        problems = [str(error)]
    if problems:
        print("nudgeflow send will not start: the templates have faults\n  " + "\n  ".join(problems), file=sys.stderr)
        return REFUSED
    config = settings.sender
    email: EmailChannel | None = None
    sms: SmsChannel | None = None
    try:
        email = SendGridChannel(config) if config.email_provider == "sendgrid" else SmtpChannel(config)
    except ValueError as error:
        log.warning("send: email nudges will be dead-lettered: %s", error)
    try:
        sms = TwilioChannel(config, settings.twilio_auth_token)
    except ValueError as error:
        log.warning("send: SMS nudges will be dead-lettered: %s", error)
    ensure_topics(settings)

    async def main() -> None:
        metrics = SenderMetrics()
        sender = Sender(settings, Templates(config.templates_dir), email, sms, metrics)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, sender.stop)
        web = await start_web(web_app(metrics, settings), config.web_host, config.web_port)
        providers = ", ".join(f"{c.provider}" for c in (email, sms) if c is not None) or "none"
        where = f"http://{config.web_host}:{config.web_port}/metrics"
        print(f"send: delivering through {providers}; metrics on {where}", flush=True)
        try:
            await sender.run()
        finally:
            await web.cleanup()

    asyncio.run(main())
    return 0


def register(commands: Commands) -> None:
    """Add `nudgeflow send` to the command line."""
    commands.add_parser("send", help="render and deliver each nudge once (SMTP, SendGrid, Twilio)").set_defaults(
        handler=command_send
    )
