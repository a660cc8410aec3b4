"""The HTTP collector: Segment/RudderStack-compatible tracking API and sender webhooks, onto the events topic.

Pure parts (request shapes, provider mappings, signatures, contact cleaning, dedupe) live in their own
modules; `app` is the aiohttp shell and `producer` the Kafka edge.
"""
