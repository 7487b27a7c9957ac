"""Every table module of the cloud, imported so that ``Base.metadata`` knows them all (Alembic's
autogenerate and the tests that create schemas need the whole set, not just what one caller
happened to import)."""


def register_all_tables() -> None:
    import cloud.accounts.models
    import cloud.alerts.models
    import cloud.audit.models
    import cloud.models
    import cloud.property.models  # noqa: F401
