"""Pydantic models shared by every part of nudgeflow: events in, profiles, triggers out, configuration."""
