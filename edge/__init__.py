"""The gateway runtime: outbox, uplink, supervisor, status and CLI."""
