"""Events as the gateways sent them: storing them once (ingest's hot path) and reading them back."""

from cloud.events.repository import IncomingBatch, StoreResult, store_batch, store_batches
from cloud.events.service import EventPage, list_events

__all__ = ["EventPage", "IncomingBatch", "StoreResult", "list_events", "store_batch", "store_batches"]
