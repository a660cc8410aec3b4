"""The pure core: functions of (state, event, now) returning the new state and what to emit. No I/O here."""
