"""The thin launcher: the ``gatehouse`` command and ``gatehouse demo``."""

__version__ = "0.1.0"
