"""`python -m streams.cli`: what the tests, the supervisor and the benchmarks start processes with."""

import sys

from streams.cli.app import main

sys.exit(main())
