"""`nudgeflow simulate`: realistic shopper sessions onto the events topic."""

from __future__ import annotations

import argparse

from schemas.settings import Settings
from streams.cli.base import Commands


def command_simulate(settings: Settings, arguments: argparse.Namespace) -> int:
    """`nudgeflow simulate`: play simulated shopper sessions onto the events topic."""
    from streams.broker.topics import ensure_topics
    from streams.simulator.shoppers import Simulator

    ensure_topics(settings)
    simulator = Simulator(settings, arguments.rate, arguments.shoppers, arguments.seed)
    sent = simulator.run(arguments.duration)
    print(f"simulate: sent {sent} events to {settings.events_topic}", flush=True)
    return 0


def register(commands: Commands) -> None:
    """Add `nudgeflow simulate` to the command line."""
    simulate = commands.add_parser("simulate", help="play realistic shopper sessions onto the events topic")
    simulate.add_argument("--rate", type=float, default=3.0, help="shopper sessions per second")
    simulate.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    simulate.add_argument("--shoppers", type=int, default=500, help="distinct shoppers")
    simulate.add_argument("--seed", type=int, default=None)
    simulate.set_defaults(handler=command_simulate)
