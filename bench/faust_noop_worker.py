"""A Faust worker that reads the events topic and does nothing with it: Faust's own ceiling on this machine,
the baseline `worker_throughput.py --faust-baseline` runs beside nudgeflow's worker.

    python bench/faust_noop_worker.py    (configured by the same NUDGEFLOW_* variables as the worker)
"""

from __future__ import annotations

import faust

from schemas.settings import Settings


def main() -> None:
    settings = Settings()
    app = faust.App(
        f"{settings.app_id}-faust-noop",
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(settings.data_dir / "faust-noop"),
        topic_partitions=settings.partitions,
        topic_disable_leader=True,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
    )
    events = app.topic(
        settings.events_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    @app.agent(events, concurrency=1)
    async def read(stream: faust.StreamT[bytes]) -> None:
        async for _ in stream.events():
            pass  # the cost of getting a message to an agent, and nothing else

    faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
