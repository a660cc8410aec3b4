"""The streaming side of nudgeflow: the pure core (`rules`), what every runner hosts (`processing`), the two
runners (`runners`: batched aiokafka, Faust), the state they keep (`state`), Kafka's topics and outbox
(`broker`), the worker's HTTP face (`web`), the collector, the command line (`cli`, the only module that
imports `sinks`) and the simulator (a development tool)."""
