"""The hosts of the processor (streams.processing): each fetches records from Kafka, hands them to the
processor, and stores, sends and commits in its own checkpoint order. `batched` is an aiokafka loop;
`faust` is a Faust app whose agents keep the states in Faust tables."""
