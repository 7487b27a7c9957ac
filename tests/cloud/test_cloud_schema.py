from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from cloud.db import create_engine
from cloud.events import store_batch
from cloud.events.partitions import MONTHS_AHEAD, add_months, ensure_event_partitions
from cloud.schema import current_revision, head_revision, upgrade_database
from tests.cloud.conftest import Database
from tests.cloud.helpers import make_events, new_gateway_id, new_store_id


async def test_migrations_reach_head_and_run_twice(db: Database) -> None:
    assert await current_revision(db.engine) == head_revision()
    assert await upgrade_database(db.engine) == head_revision()  # a second start changes nothing
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"gateways", "events", "ingest_rejects", "alembic_version"} <= tables
    assert {"gateway_commands", "access_versions", "access_credentials", "access_levels"} <= tables
    assert {"access_schedules", "access_holidays"} <= tables


async def test_0002_downgrades_and_upgrades_again(database_url: str, tmp_path: Path) -> None:
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    from cloud.schema import alembic_config

    def downgrade(connection: Connection) -> str | None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")
        return MigrationContext.configure(connection).get_current_revision()

    # Its own database: the module's shared one stays at head for the other tests.
    url = f"sqlite+aiosqlite:///{tmp_path}/down.db" if database_url.startswith("sqlite") else None
    if url is None:
        from tests.support.postgres import create_database, drop_database

        url = await create_database("gh_down")
    engine = create_engine(url)
    try:
        await upgrade_database(engine)
        async with engine.begin() as conn:
            assert await conn.run_sync(downgrade) == "0001"
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("gateways")}
            )
        assert "gateway_commands" not in tables and "access_credentials" not in tables
        assert "access_version" not in columns
        assert await upgrade_database(engine) == head_revision()
    finally:
        await engine.dispose()
        if not url.startswith("sqlite"):
            await drop_database(url)


async def test_fresh_sqlite_file_migrates(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/fresh.db")
    try:
        assert await upgrade_database(engine) == head_revision()
        async with engine.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            fks = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
        assert (mode, fks) == ("wal", 1)
    finally:
        await engine.dispose()


async def _partitions(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'events'::regclass"
            )
        )
        return set(rows.scalars())


async def _partition_of(db: Database, gateway_id: str) -> list[str]:
    """The partition holding each event of the gateway, in seq order."""
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT tableoid::regclass::text FROM events WHERE gateway_id = :gw ORDER BY seq"),
            {"gw": gateway_id},
        )
        return list(rows.scalars())


async def test_postgres_events_are_partitioned_by_month(pg: Database) -> None:
    names = await _partitions(pg)
    last = add_months(datetime.now(UTC).date().replace(day=1), MONTHS_AHEAD)
    assert "events_default" in names
    assert "events_p2024_01" in names
    assert f"events_p{last:%Y_%m}" in names
    assert f"events_p{add_months(last, 1):%Y_%m}" not in names


async def test_events_land_in_their_month_and_1970_in_default(pg: Database) -> None:
    gw, store = new_gateway_id(), new_store_id()
    may_2025 = int(datetime(2025, 5, 17, 8, 30, tzinfo=UTC).timestamp() * 1000)
    events = make_events(1, 1, time_ms=0) + make_events(2, 1, time_ms=may_2025)
    async with pg.sessions() as session, session.begin():
        assert await store_batch(session, gw, store, datetime.now(UTC), events) == (2, 0)
    assert await _partition_of(pg, gw) == ["events_default", "events_p2025_05"]
    # The unique key holds across partitions: a resend of both is stored once.
    async with pg.sessions() as session, session.begin():
        assert await store_batch(session, gw, store, datetime.now(UTC), events) == (0, 2)


async def test_new_partition_takes_over_rows_stranded_in_default(pg: Database) -> None:
    gw, store = new_gateway_id(), new_store_id()
    # A clock running ahead, past the prepared partitions: the row waits in the default partition.
    far = add_months(datetime.now(UTC).date().replace(day=1), MONTHS_AHEAD + 2)
    far_ms = int(datetime(far.year, far.month, 3, tzinfo=UTC).timestamp() * 1000)
    async with pg.sessions() as session, session.begin():
        await store_batch(session, gw, store, datetime.now(UTC), make_events(1, 1, time_ms=far_ms))
    assert await _partition_of(pg, gw) == ["events_default"]
    # Time passes: the start-up job now prepares that month and moves the row into it.
    later = datetime(far.year, far.month, 1, tzinfo=UTC)
    async with pg.engine.begin() as conn:
        created = await ensure_event_partitions(conn, months_ahead=0, now=later)
    assert created == [f"events_p{far:%Y_%m}"]
    assert await _partition_of(pg, gw) == [f"events_p{far:%Y_%m}"]
    async with pg.engine.begin() as conn:  # done once
        assert await ensure_event_partitions(conn, months_ahead=0, now=later) == []


async def test_partitions_are_a_no_op_on_sqlite(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        async with engine.begin() as conn:
            assert await ensure_event_partitions(conn) == []
    finally:
        await engine.dispose()


def test_add_months() -> None:
    assert add_months(date(2024, 11, 1), 3) == date(2025, 2, 1)
    assert add_months(date(2024, 1, 1), 36) == date(2027, 1, 1)
