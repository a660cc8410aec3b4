"""`nudgeflow demo-audience`: the demo's SMTP server, Twilio stand-in and recipients."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from schemas.settings import Settings
from streams.cli.base import REFUSED, Commands


def command_demo_audience(settings: Settings, arguments: argparse.Namespace) -> int:
    """The demo's recipients: a local SMTP server and Twilio stand-in, acting on what they get."""
    from schemas.settings import DEMO_WRITE_KEY
    from sinks.sender.demo_audience import Audience, serve

    if not settings.demo:
        print("nudgeflow demo-audience is for the local demo (NUDGEFLOW_DEMO=true) only", file=sys.stderr)
        return REFUSED
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
    audience = Audience(settings.sender_public_url, DEMO_WRITE_KEY, token, seed=arguments.seed)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(audience, arguments.smtp_port, arguments.twilio_port, settings.sender.twilio_account_sid, stop)

    asyncio.run(main())
    return 0


def register(commands: Commands) -> None:
    """Add `nudgeflow demo-audience` to the command line."""
    audience = commands.add_parser("demo-audience", help="the demo's SMTP server, Twilio stand-in and recipients")
    audience.add_argument("--smtp-port", type=int, default=2525)
    audience.add_argument("--twilio-port", type=int, default=6069)
    audience.add_argument("--seed", type=int, default=None)
    audience.set_defaults(handler=command_demo_audience)
