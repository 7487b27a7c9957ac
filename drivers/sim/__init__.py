"""Simulators: product features that ``gatehouse demo`` runs on and installers rehearse with."""
