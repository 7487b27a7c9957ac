"""Device families turning field protocols into normalized events (see protocols.sink.EventSink)."""
