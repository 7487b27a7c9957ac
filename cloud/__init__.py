"""The Gatehouse cloud service: ingest, database and migrations, the API, and its CLI commands.

Imports ``protocols`` and nothing of ``edge`` or ``drivers``: the two sides meet only in the contract.
"""
