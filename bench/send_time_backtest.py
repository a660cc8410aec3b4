"""Back-test of `send_time: best` on held-out simulated history (streams/simulator/shoppers.py, persona_history): would
the chosen hour have caught more opens than sending at once?

Each simulated person's opens before the cut-off build their `open_hours` with the core's own update
(`open_hours_after`). Every open after the cut-off is a held-out send: a nudge comes due at a moment drawn
uniformly in the 24 hours before it (seeded), and goes out either at once or at the moment the gate's
`best_send_moment` picks in a 24h window (own hours from MIN_OWN_OPENS opens, else the population hour). A send
"catches" the open when it goes out in the local hour the person opened in. Printed beside each other in
the same run: at once (the baseline), the population hour alone, and the best hour.

Run: .venv/bin/python bench/send_time_backtest.py [--people 3000] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
from datetime import UTC, datetime, timedelta

import msgspec

from schemas.events import Event, EventName
from schemas.rules import PolicyConfig
from streams.rules.policy import best_send_moment, hour_scores, zone_of
from streams.rules.profiles import open_hours_after
from streams.simulator.shoppers import persona_population

START = datetime(2025, 1, 1, tzinfo=UTC)
CUTOFF = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 7, 1, tzinfo=UTC)
WINDOW = timedelta(hours=24)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--population-hour", type=int, default=PolicyConfig().population_best_hour)
    arguments = parser.parse_args()
    policy = PolicyConfig()
    rng = random.Random(arguments.seed)
    sends = caught_now = caught_population = caught_best = own = 0
    for person in persona_population(arguments.seed, arguments.people, START, END):
        hours: list[int] | msgspec.UnsetType = msgspec.UNSET
        for moment, document in person.events:
            if document.get("event") not in (EventName.EMAIL_OPENED, EventName.EMAIL_CLICKED):
                continue
            zone = zone_of(document.get("context", {}).get("timezone"), policy)
            if moment < CUTOFF:
                hours = open_hours_after(hours, Event.model_validate(document), zone)
                continue
            opened_hour = moment.astimezone(zone).hour
            due = moment - timedelta(seconds=rng.uniform(0, WINDOW.total_seconds()))
            known = [] if isinstance(hours, msgspec.UnsetType) else hours
            scores, is_own = hour_scores(known, arguments.population_hour)
            population, _ = hour_scores([], arguments.population_hour)
            best = best_send_moment(scores, zone, due, due + WINDOW, None)
            by_population = best_send_moment(population, zone, due, due + WINDOW, None)
            sends += 1
            own += is_own
            caught_now += due.astimezone(zone).hour == opened_hour
            caught_population += by_population.astimezone(zone).hour == opened_hour
            caught_best += best.astimezone(zone).hour == opened_hour
    print(f"held-out sends: {sends} ({own / max(sends, 1):.1%} with the person's own hours), {arguments.people} people")
    for name, caught in (("at once", caught_now), ("population hour", caught_population), ("best hour", caught_best)):
        print(f"  {name:<16} sent in the hour of the open: {caught / max(sends, 1):6.1%}  ({caught})")


if __name__ == "__main__":
    main()
