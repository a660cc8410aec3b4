"""The worker's state: tables per partition, their stores, changelogs and recovery."""
