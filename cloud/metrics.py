"""Prometheus metrics of the cloud process, served on ``GET /metrics``.

Process-wide, in prometheus_client's default registry: one cloud process runs one ingest and one
API. Reject reasons are a short fixed vocabulary (``RejectReason``), so the label stays small.
"""

from enum import StrEnum

from prometheus_client import Counter, Gauge, Histogram


class RejectReason(StrEnum):
    MALFORMED = "malformed"  # does not decode to the expected envelope
    GATEWAY_MISMATCH = "gateway_mismatch"  # envelope names another gateway than the topic
    UNKNOWN_GATEWAY = "unknown_gateway"  # not in the registry
    BAD_TOPIC = "bad_topic"  # not a topic of protocol v1
    UNSTORABLE = "unstorable"  # decodes, but the database refuses its content


MESSAGES = Counter("gatehouse_ingest_messages", "MQTT messages taken by ingest", ["channel"])
EVENTS = Counter("gatehouse_ingest_events", "Events stored (new, not duplicates)")
DUPLICATES = Counter("gatehouse_ingest_duplicates", "Events received again and skipped (already stored)")
REJECTS = Counter("gatehouse_ingest_rejects", "Messages refused by ingest", ["reason"])
UNANSWERED_REJECTS = Counter(
    "gatehouse_ingest_unanswered_rejects", "Refused messages no reject could be sent for (no store id or seq)"
)
DROPPED = Counter("gatehouse_ingest_dropped", "Messages dropped because ingest's queue was full")
DB_ERRORS = Counter("gatehouse_ingest_db_errors", "Failed ingest transactions (retried)")
ACKS = Counter("gatehouse_ingest_acks", "Acks and rejects published", ["type"])
COMMIT_SECONDS = Histogram(
    "gatehouse_ingest_commit_seconds",
    "Time of one ingest transaction, from first statement to commit",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ALARM_SECONDS = Histogram(
    "gatehouse_ingest_alarm_seconds",
    "An alarm's time in the cloud: from its arrival from the broker to its ack being published",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)
GATEWAYS_ONLINE = Gauge("gatehouse_gateways_online", "Registered gateways whose last state says online")
