"""What every runner hosts: one person's messages in, the pure core applied, outputs and changed states out.

`Processor` handles the records of the co-partitioned source topics (events, identity, privacy) and the
passing of time, reading and saving states through a `PersonStore` and handing every record it publishes
to an `Output`. It never talks to Kafka and never awaits: a runner (the batched aiokafka loop in
`streams.runners.batched`, the Faust app in `streams.runners.faust`) fetches the records, gives them to
the processor, and stores, sends and commits in the checkpoint order (docs/architecture.md, "Checkpoint
order"). It may import `schemas` and `streams.rules`, `streams.timers`, `streams.metrics`; nothing of a runner.
"""
