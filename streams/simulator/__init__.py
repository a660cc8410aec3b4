"""A development tool, not part of the stream: simulated shoppers for `make run`, the demos, the benchmarks
and the back-tests (`shoppers`). Nothing in the pipeline imports it; it may import `schemas` and the clock.
"""
