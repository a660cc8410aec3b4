"""`nudgeflow worker`: the stream worker, hosted by the batched runner or by Faust."""

from __future__ import annotations

import argparse
import asyncio
import signal

from schemas.rules import load_rules
from schemas.settings import Settings
from streams.cli.base import REFUSED, Commands, log, refused


def command_worker(settings: Settings, arguments: argparse.Namespace) -> int:
    """`nudgeflow worker`: run the stream worker under the batched or the Faust runner."""
    from sinks.analytics.web import start_web
    from streams.broker.topics import ensure_topics
    from streams.runners.batched import BatchedRunner, tune_garbage_collector
    from streams.web.server import build_api

    if refused(settings, "worker"):
        return REFUSED
    rules = load_rules(settings.rules_file)
    ensure_topics(settings)
    tune_garbage_collector()
    if (arguments.runner or settings.runner) == "faust":
        from streams.runners.faust import run_worker

        return run_worker(settings.model_copy(update={"runner": "faust"}), rules)

    async def main() -> None:
        worker = BatchedRunner(settings, rules)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, worker.stop)
        web = await start_web(build_api(worker), settings.worker_web_host, settings.worker_web_port)
        log.info("worker API on %s (/profiles/{id}, /segments/{name}/members, /metrics)", worker.url)
        try:
            await worker.run()
        finally:
            await web.cleanup()

    import uvloop  # the event loop's own overhead shows at tens of thousands of messages a second

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    return 0


def register(commands: Commands) -> None:
    """Add `nudgeflow worker` to the command line."""
    worker = commands.add_parser("worker", help="run the stream worker (profiles, rules, timers)")
    worker.add_argument("--runner", choices=["batched", "faust"], help="what hosts it (default: the runner setting)")
    worker.set_defaults(handler=command_worker)
