from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from streams.broker.outbox import partition_of


@given(key=st.binary(min_size=1, max_size=64), partitions=st.integers(min_value=1, max_value=64))
def test_a_key_goes_where_the_collectors_producer_puts_it(key: bytes, partitions: int) -> None:
    # The collector writes with kafka-python: a person's events, identity and privacy messages must meet on
    # one partition whichever client wrote them.
    assert partition_of(key, partitions) == (kafka_python_murmur2(key) & 0x7FFFFFFF) % partitions
