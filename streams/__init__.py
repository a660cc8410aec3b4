"""The streaming side of nudgeflow: the batched worker, its tables, timers and HTTP API, wired around the
pure core in streams.rules."""
