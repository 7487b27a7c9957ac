"""Alembic migrations of the cloud database. There is no alembic.ini: ``cloud.schema`` builds the
Alembic config in code, so the migrations travel inside the package."""
