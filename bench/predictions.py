"""Training and scoring time and memory of the predictions on simulated customers in chDB.

    .venv/bin/python bench/predictions.py [--people 100000] [--horizon-days 90] [--keep]

No Kafka. `--people` persona histories (streams.simulator.shoppers.persona_population, a year each) are written into a
fresh chDB's events table as the sink writes them (sinks.clickhouse.rows.event_row), then each step of
`nudgeflow models train` is timed on its own: reading the features (two statements for the moment of training,
two more and the outcomes one horizon earlier for the classifier's labels), fitting MBG/NBD and Gamma-Gamma,
fitting the classifier, scoring (the predictions and the Score records), and storing the scores.

The baseline, in the same run, is the plain read of every customer's orders (ORDERS_SQL alone): what any
report over the same table pays. Memory is the peak resident set (ru_maxrss) of the process that trains,
before and after training; the histories are written by a child process, so their rows do not count.

With `--pymc`, and PyMC-Marketing installed in the interpreter, its BetaGeoModel and GammaGammaModel are fitted
by MAP on the same summary, for the comparison in bench/RESULTS.md, "Predictions".
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from _harness import print_table, scratch_directory

from schemas.settings import Settings
from sinks.clickhouse.client import connect
from sinks.clickhouse.rows import EVENTS, RowOptions, event_row
from sinks.clickhouse.schema import apply_migrations
from sinks.predictions.clv import fit_clv
from sinks.predictions.features import ORDERS_SQL, epoch_ms, propensity_matrix, read_histories, read_outcomes, rfm
from sinks.predictions.propensity import fit_propensity
from sinks.predictions.publish import store_scores
from sinks.predictions.training import model_version, score
from streams.simulator.shoppers import persona_population

START = datetime(2025, 6, 1, tzinfo=UTC)
END = datetime(2026, 6, 1, tzinfo=UTC)
INSERT_BATCH = 200_000


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def store_population(client: Any, options: RowOptions, people: int) -> int:
    rows: list[list[Any]] = []
    written = 0
    for person in persona_population(1, people, START, END):
        for _, document in person.events:
            row = event_row(orjson.dumps(document), "events", 0, written + len(rows), options, END)
            if row is not None:
                rows.append(row)
        if len(rows) >= INSERT_BATCH:
            client.insert("events", rows, column_names=list(EVENTS.columns))
            written += len(rows)
            rows = []
    if rows:
        client.insert("events", rows, column_names=list(EVENTS.columns))
        written += len(rows)
    return written


def bench_settings(directory: Path) -> Settings:
    return Settings(clickhouse_path=directory / "clickhouse", clickhouse_database="bench", demo=True)


def timed(steps: list[tuple[str, float]], name: str, started: float) -> float:
    now = time.perf_counter()
    steps.append((name, now - started))
    return now


def fit_pymc(summary: Any) -> list[tuple[str, float]]:
    import pandas as pd
    from pymc_marketing.clv import BetaGeoModel, GammaGammaModel

    data = pd.DataFrame(
        {
            "customer_id": np.arange(summary.frequency.size),
            "frequency": summary.frequency,
            "recency": summary.recency,
            "T": summary.age,
            "monetary_value": summary.monetary,
        }
    )
    started = time.perf_counter()
    BetaGeoModel(data=data).fit(method="map")
    orders = time.perf_counter() - started
    repeat = data[(data.frequency > 0) & (data.monetary_value > 0)]
    started = time.perf_counter()
    GammaGammaModel(data=repeat).fit(method="map")
    return [
        ("PyMC-Marketing BG/NBD fit (MAP)", orders),
        ("PyMC-Marketing Gamma-Gamma fit (MAP)", time.perf_counter() - started),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--horizon-days", type=int, default=90)
    parser.add_argument("--pymc", action="store_true", help="also fit PyMC-Marketing's models on the same summary")
    parser.add_argument("--keep", action="store_true", help="keep the chDB directory")
    parser.add_argument("--populate", metavar="DIRECTORY", help=argparse.SUPPRESS)  # the child's part
    arguments = parser.parse_args()
    horizon = arguments.horizon_days

    if arguments.populate:
        client = connect(bench_settings(Path(arguments.populate)))
        apply_migrations(client)
        started = time.perf_counter()
        events = store_population(client, RowOptions.of(bench_settings(Path(arguments.populate))), arguments.people)
        print(f"{arguments.people} people, {events} events written in {time.perf_counter() - started:.1f}s")
        client.close()
        return

    with scratch_directory(arguments.keep) as directory:
        # chDB holds its directory for the life of a process: the child writes, then this process reads.
        populate = [sys.executable, __file__, "--populate", str(directory), "--people", str(arguments.people)]
        subprocess.run(populate, check=True)
        settings = bench_settings(directory)
        client = connect(settings)
        before = peak_mib()

        started = time.perf_counter()
        client.query(ORDERS_SQL, parameters={"at_ms": epoch_ms(END)})
        baseline = time.perf_counter() - started

        steps: list[tuple[str, float]] = []
        began = started = time.perf_counter()
        people = read_histories(client, END)
        earlier_at = END - timedelta(days=horizon)
        earlier = read_histories(client, earlier_at)
        then = read_outcomes(client, earlier_at, END)
        started = timed(steps, "read features (5 statements)", started)
        summary = rfm(people, END)
        clv_model = fit_clv(summary)
        started = timed(steps, "fit MBG/NBD + Gamma-Gamma", started)
        ordered = np.array([person.person_id in then for person in earlier], dtype=np.bool_)
        propensity_model = fit_propensity(propensity_matrix(earlier, earlier_at), ordered)
        started = timed(steps, "fit the propensity classifier", started)
        trained_at = started
        clv = clv_model.predict(summary, horizon)
        propensity = propensity_model.predict(propensity_matrix(people, END))
        version = model_version(END, horizon)
        scores = [score(person, version, END, horizon, clv, propensity, index) for index, person in enumerate(people)]
        started = timed(steps, f"score {len(scores)} customers", started)
        scoring = started - trained_at
        store_scores(client, scores)
        started = timed(steps, "store the scores in ClickHouse", started)
        total = started - began
        after = peak_mib()
        if arguments.pymc:
            steps.extend(fit_pymc(summary))
        client.close()

    rows: list[list[object]] = [["baseline: read every customer's orders (ORDERS_SQL)", f"{baseline:.2f}"]]
    rows.extend([name, f"{seconds:.2f}"] for name, seconds in steps)
    rows.append(["whole training run (read, fit, score, store)", f"{total:.2f}"])
    print_table(["step", "seconds"], rows)
    print(
        f"customers {len(people)}; scoring {len(scores) / scoring:,.0f} customers/s; "
        f"peak RSS {before:.0f} MiB before training, {after:.0f} MiB after (+{after - before:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
