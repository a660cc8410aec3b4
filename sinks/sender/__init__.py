"""The sender, `nudgeflow send`: each nudge on the triggers topic rendered from its template and delivered
once, by email (SMTP or SendGrid) or SMS (Twilio).

It owns the delivery ledger (`ledger`, the `deliveries` topic), the message templates (`templates`, the
built-in ones in `default_templates/`), the message a trigger becomes (`messages`: context, headers, the
one-click unsubscribe link, the SMS opt-out line), the providers (`channels`), their rate limits
(`ratelimit`), its metrics (`metrics`), the consumer loop (`loop`) and the local audience of the demo
(`demo_audience`). Like the ClickHouse sink it reads Kafka and writes outside it, so it lives in `sinks/`;
it imports nothing from `streams/`.
"""
