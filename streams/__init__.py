"""The Faust side of nudgeflow: topics, tables, agents and timers wired around the pure core in streams.rules."""
