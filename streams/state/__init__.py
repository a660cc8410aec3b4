"""The worker's state: tables per partition, their stores, changelogs, checkpoints and recovery."""
