"""The `nudgeflow` command line: one module per command, each with a `register(commands)` that adds its
parser and a `command_*` handler taking (settings, arguments); `app` assembles them, `supervisor` keeps
`nudgeflow run`'s children going. This is the one package that may import across `streams/` and `sinks/`:
it wires the processes, it decides nothing."""

from streams.cli.app import main

__all__ = ["main"]
