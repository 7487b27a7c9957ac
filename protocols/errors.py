class ProtocolError(ValueError):
    """A message that does not decode to a known envelope. The text says what is wrong."""
