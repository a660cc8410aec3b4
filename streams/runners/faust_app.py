"""nudgeflow's Faust app, built from the environment's settings, for Faust's own command line:

    faust -A streams.runners.faust_app worker

(configured by the same NUDGEFLOW_* variables as `nudgeflow worker`; the web port is the worker's,
`NUDGEFLOW_WORKER_WEB_PORT`). It refuses settings left open outside demo mode, as `nudgeflow worker` does.
"""

from __future__ import annotations

from schemas.rules import load_rules
from schemas.settings import Settings
from streams.runners.faust import build_app

settings = Settings(runner="faust")
settings.check_closed("worker")
app = build_app(settings, load_rules(settings.rules_file))
