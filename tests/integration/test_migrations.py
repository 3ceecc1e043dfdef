"""The shared migration runner, on scratch databases of the test cluster."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from cloudshelf.cli import main as cli_main
from cloudshelf.devstack.stack import Stack
from cloudshelf.runtime.migrations import (
    LEGACY_TABLE,
    TABLE,
    MigrationError,
    MigrationRunner,
    MigrationTimeouts,
    load_migrations,
    migrations_of,
)

CATALOG_VERSIONS = [
    202501001,
    202509001,
    202511001,
    202511002,
    202511101,
    202511102,
    202511103,
    202511104,
    202511105,
    202511202,
    202511401,
    202511411,
    202511412,
    202511413,
    202511421,
    202511431,
    202511441,
    202511442,
    202511443,
    202511451,
]
STOREFRONT_VERSIONS = [202511201]
# Issue 19: the consumer, sinks and ingest streams each add theirs (202511301-329).
ANALYTICS_VERSIONS = [
    202501001,
    202511301,
    202511311,
    202511321,
]


@pytest_asyncio.fixture
async def scratch_dsn(stack: Stack) -> AsyncIterator[str]:
    name = f"scratch_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(stack.postgres.dsn("postgres"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield stack.postgres.dsn(name)
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


def write(directory: Path, name: str, sql: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(sql)


def write_pair(directory: Path, stem: str, up: str, down: str) -> None:
    write(directory, f"{stem}.up.sql", up)
    write(directory, f"{stem}.down.sql", down)


def runner(dsn: str, directory: Path, service: str = "test", **timeouts: float) -> MigrationRunner:
    return MigrationRunner(dsn, load_migrations(directory), service, MigrationTimeouts(**timeouts))


def catalog_runner(dsn: str) -> MigrationRunner:
    return MigrationRunner(dsn, migrations_of("services.catalog"), "catalog")


async def indexes(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT schemaname || '.' || indexname AS i FROM pg_indexes")
        return {r["i"] for r in rows}
    finally:
        await conn.close()


async def tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables"
        )
        return {r["t"] for r in rows}
    finally:
        await conn.close()


async def test_catalog_migrations_go_down_and_up_again(scratch_dsn: str) -> None:
    runner = catalog_runner(scratch_dsn)
    applied = await runner.up()
    assert [int(line.split()[1]) for line in applied] == CATALOG_VERSIONS
    assert "book_catalog.series" in await tables(scratch_dsn)
    assert "book_catalog.idempotency_keys" in await tables(scratch_dsn)
    assert "book_catalog.inventory_requests" not in await tables(scratch_dsn)
    assert await runner.up() == []  # idempotent

    assert await runner.down() == ["down 202511451 spelling phrase corrections"]
    assert "book_catalog.idx_books_price_desc" in await indexes(scratch_dsn)
    assert await runner.down() == ["down 202511443 search price desc index"]
    assert "book_catalog.idx_books_price_desc" not in await indexes(scratch_dsn)
    assert "book_catalog.idx_books_search_filtered" in await indexes(scratch_dsn)
    assert "book_catalog.idx_books_search_vector" not in await indexes(scratch_dsn)
    assert await runner.down() == ["down 202511442 search filter keys index"]
    assert "book_catalog.idx_books_search_vector" in await indexes(scratch_dsn)
    assert "book_catalog.idx_books_search_filtered" not in await indexes(scratch_dsn)
    assert await runner.down() == ["down 202511441 search filter keys"]
    assert await runner.down() == ["down 202511431 spelling lexicon"]
    assert "book_catalog.spelling_words" not in await tables(scratch_dsn)
    assert await runner.down() == ["down 202511421 category rename ends searches"]
    assert "book_catalog.idx_books_ranked_lexemes" in await indexes(scratch_dsn)
    assert await runner.down() == ["down 202511413 search total"]
    assert await runner.down() == ["down 202511412 search ranked lexemes index"]
    assert "book_catalog.idx_books_ranked_lexemes" not in await indexes(scratch_dsn)
    assert await runner.down() == ["down 202511411 search ranked lexemes"]
    assert await runner.down() == ["down 202511401 book suggestions"]
    assert "book_catalog.suggestions" not in await tables(scratch_dsn)
    assert await runner.down() == ["down 202511202 order purchases"]
    assert "book_catalog.order_purchases" not in await tables(scratch_dsn)
    assert await runner.down() == ["down 202511105 popular books refresh time"]
    assert await runner.down() == ["down 202511104 idempotency keys"]
    after_down = await tables(scratch_dsn)
    assert "book_catalog.inventory_requests" in after_down
    assert "book_catalog.idempotency_keys" not in after_down
    assert await runner.down() == ["down 202511103 cache invalidations"]
    assert "book_catalog.cache_invalidations" not in await tables(scratch_dsn)
    assert await runner.down() == ["down 202511102 outbox relay"]
    await runner.to(202501001)
    assert "book_catalog.series" not in await tables(scratch_dsn)
    states = await runner.status()
    assert [s.applied for s in states] == [True] + [False] * (len(CATALOG_VERSIONS) - 1)

    await runner.to(0)
    assert not {t for t in await tables(scratch_dsn) if t.startswith("book_catalog.")}
    await runner.up()
    assert all(s.applied for s in await runner.status())


async def test_concurrent_runners_apply_each_migration_once(scratch_dsn: str) -> None:
    migrations = migrations_of("services.catalog")
    results = await asyncio.gather(
        *(MigrationRunner(scratch_dsn, migrations, "catalog").up() for _ in range(3))
    )
    assert sorted(len(r) for r in results) == [0, 0, len(migrations)]


async def test_a_changed_migration_is_refused(scratch_dsn: str, tmp_path: Path) -> None:
    write_pair(tmp_path, "1_first", "CREATE TABLE t1 (id int);", "DROP TABLE t1;")
    await runner(scratch_dsn, tmp_path).up()
    write(tmp_path, "1_first.up.sql", "CREATE TABLE t1 (id bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await runner(scratch_dsn, tmp_path).up()


async def test_a_failing_migration_leaves_nothing_behind(scratch_dsn: str, tmp_path: Path) -> None:
    write_pair(tmp_path, "1_ok", "CREATE TABLE ok (id int);", "DROP TABLE ok;")
    write_pair(
        tmp_path,
        "2_broken",
        "CREATE TABLE half (id int); SELECT no_such_function();",
        "DROP TABLE half;",
    )
    broken = runner(scratch_dsn, tmp_path)
    with pytest.raises(asyncpg.exceptions.UndefinedFunctionError):
        await broken.up()
    assert [s.applied for s in await broken.status()] == [True, False]
    assert "public.half" not in await tables(scratch_dsn)


def test_migration_files_must_come_in_pairs(tmp_path: Path) -> None:
    write(tmp_path, "1_only_up.up.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match="both an up and a down"):
        load_migrations(tmp_path)
    write(tmp_path, "bad name.sql", "")
    with pytest.raises(MigrationError, match="expected"):
        load_migrations(tmp_path)


async def recorded(dsn: str) -> dict[str, list[int]]:
    """Versions per service in the migrations table."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f"SELECT service, version FROM {TABLE} ORDER BY service, version")
    finally:
        await conn.close()
    versions: dict[str, list[int]] = {}
    for row in rows:
        versions.setdefault(row["service"], []).append(row["version"])
    return versions


async def test_services_sharing_one_database_keep_their_own_history(scratch_dsn: str) -> None:
    # All three start at version 202501001: one versions-only table made them refuse
    # each other ("changed after it was applied").
    runners = {
        name: MigrationRunner(scratch_dsn, migrations_of(f"services.{name}"), name)
        for name in ("catalog", "governance", "analytics", "storefront")
    }
    for each in runners.values():
        assert await each.up()
    for each in runners.values():
        assert await each.up() == []
        assert all(state.applied for state in await each.status())
    assert await recorded(scratch_dsn) == {
        "analytics": ANALYTICS_VERSIONS,
        "catalog": CATALOG_VERSIONS,
        "governance": [202501001],
        "storefront": STOREFRONT_VERSIONS,
    }
    assert {"book_catalog.books", "governance.data_classes", "storefront.orders"} <= await tables(
        scratch_dsn
    )

    # Reverting one service leaves the others' schemas and rows alone.
    assert await runners["governance"].down() == ["down 202501001 governance schema"]
    assert "governance" not in await recorded(scratch_dsn)
    assert "book_catalog.books" in await tables(scratch_dsn)
    assert all(state.applied for state in await runners["catalog"].status())


async def test_checksums_ignore_line_endings_and_trailing_whitespace(
    scratch_dsn: str, tmp_path: Path
) -> None:
    write_pair(
        tmp_path,
        "1_first",
        "CREATE TABLE t1 (id int);\nCREATE TABLE t2 (id int);\n",
        "DROP TABLE t2;\nDROP TABLE t1;\n",
    )
    await runner(scratch_dsn, tmp_path).up()

    # A CRLF checkout, an editor that adds trailing spaces and a final blank line.
    (tmp_path / "1_first.up.sql").write_bytes(
        b"CREATE TABLE t1 (id int);  \r\nCREATE TABLE t2 (id int);\t\r\n\r\n"
    )
    (tmp_path / "1_first.down.sql").write_bytes(b"DROP TABLE t2;\r\nDROP TABLE t1;\r\n")
    crlf = runner(scratch_dsn, tmp_path)
    assert [s.applied for s in await crlf.status()] == [True]
    assert await crlf.up() == []
    assert await crlf.to(0) == ["down 1 first"]  # the down script's checksum matches too

    # A real change is still refused.
    await crlf.up()
    write(tmp_path, "1_first.up.sql", "CREATE TABLE t1 (id bigint);\nCREATE TABLE t2 (id int);\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await runner(scratch_dsn, tmp_path).up()


async def test_a_changed_down_script_is_refused_when_it_would_run(
    scratch_dsn: str, tmp_path: Path
) -> None:
    write_pair(tmp_path, "1_first", "CREATE TABLE t1 (id int);", "DROP TABLE t1;")
    await runner(scratch_dsn, tmp_path).up()
    write(tmp_path, "1_first.down.sql", "DROP TABLE t1 CASCADE;")
    changed = runner(scratch_dsn, tmp_path)
    assert await changed.up() == []  # up and status are unaffected
    with pytest.raises(MigrationError, match="down script of migration 1"):
        await changed.to(0)
    assert "public.t1" in await tables(scratch_dsn)


INDEX_VALID = (
    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "WHERE c.relname = $1"
)


async def test_no_transaction_mode_builds_an_index_concurrently(
    scratch_dsn: str, tmp_path: Path
) -> None:
    write_pair(tmp_path, "1_table", "CREATE TABLE t (id int, name text);", "DROP TABLE t;")
    concurrent = (
        "-- Builds the index without blocking writes.\n"
        "-- cloudshelf:no-transaction\n"
        "DROP INDEX CONCURRENTLY IF EXISTS t_name;\n"
        "CREATE INDEX CONCURRENTLY t_name ON t (name); -- a comment; with a semicolon\n"
    )
    write(tmp_path, "2_index.up.sql", concurrent.replace("-- cloudshelf:no-transaction\n", ""))
    write(tmp_path, "2_index.down.sql", "DROP INDEX t_name;")
    # Without the marker the script runs in a transaction, where PostgreSQL refuses it.
    with pytest.raises(asyncpg.exceptions.ActiveSQLTransactionError):
        await runner(scratch_dsn, tmp_path).up()

    write(tmp_path, "2_index.up.sql", concurrent)
    write(
        tmp_path,
        "2_index.down.sql",
        "-- cloudshelf:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS t_name;",
    )
    marked = runner(scratch_dsn, tmp_path)
    assert await marked.up() == ["up 2 index"]
    conn = await asyncpg.connect(scratch_dsn)
    try:
        assert await conn.fetchval(INDEX_VALID, "t_name") is True
        assert await marked.to(1) == ["down 2 index"]
        assert await conn.fetchval(INDEX_VALID, "t_name") is None
    finally:
        await conn.close()


async def test_a_failing_no_transaction_script_says_where_and_runs_again(
    scratch_dsn: str, tmp_path: Path
) -> None:
    write_pair(tmp_path, "1_table", "CREATE TABLE t (id int);", "DROP TABLE t;")
    write(
        tmp_path,
        "2_index.up.sql",
        "-- cloudshelf:no-transaction\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n"
        "CREATE INDEX CONCURRENTLY t_missing ON t (no_such_column);\n",
    )
    write(tmp_path, "2_index.down.sql", "DROP INDEX t_id;")
    with pytest.raises(MigrationError, match="failed at statement 2 of 2"):
        await runner(scratch_dsn, tmp_path).up()
    assert [s.applied for s in await runner(scratch_dsn, tmp_path).status()] == [True, False]

    write(
        tmp_path,
        "2_index.up.sql",
        "-- cloudshelf:no-transaction\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_id_desc ON t (id DESC);\n",
    )
    assert await runner(scratch_dsn, tmp_path).up() == ["up 2 index"]


async def test_a_migration_blocked_by_a_lock_fails_fast(scratch_dsn: str, tmp_path: Path) -> None:
    write_pair(tmp_path, "1_table", "CREATE TABLE books (id int);", "DROP TABLE books;")
    write_pair(
        tmp_path,
        "2_alter",
        "ALTER TABLE books ADD COLUMN title text;",
        "ALTER TABLE books DROP COLUMN title;",
    )
    await runner(scratch_dsn, tmp_path).to(1)

    reader = await asyncpg.connect(scratch_dsn)
    try:
        # A long read holds ACCESS SHARE; the ALTER needs ACCESS EXCLUSIVE.
        transaction = reader.transaction()
        await transaction.start()
        await reader.fetch("SELECT * FROM books")
        started = asyncio.get_running_loop().time()
        with pytest.raises(MigrationError, match=r"waited more than 0\.5s for a lock"):
            # Without a lock timeout it would wait here for as long as the reader reads.
            await asyncio.wait_for(runner(scratch_dsn, tmp_path, lock=0.5).up(), timeout=10)
        assert asyncio.get_running_loop().time() - started < 5
        await transaction.rollback()
    finally:
        await reader.close()
    assert [s.applied for s in await runner(scratch_dsn, tmp_path).status()] == [True, False]
    assert await runner(scratch_dsn, tmp_path).up() == ["up 2 alter"]


async def test_status_does_not_wait_behind_a_running_migration(
    scratch_dsn: str, tmp_path: Path
) -> None:
    write_pair(tmp_path, "1_table", "CREATE TABLE t (id int);", "DROP TABLE t;")
    await runner(scratch_dsn, tmp_path).up()
    other = await asyncpg.connect(scratch_dsn)
    try:
        # What a running migration holds for its whole run.
        await other.execute("SELECT pg_advisory_lock($1)", 0x636C6F7564)
        states = await asyncio.wait_for(runner(scratch_dsn, tmp_path).status(), timeout=5)
        assert [s.applied for s in states] == [True]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(runner(scratch_dsn, tmp_path).up(), timeout=1)
    finally:
        await other.close()


async def make_legacy_database(dsn: str, migrations_applied: int) -> None:
    """A catalog database as the runner left it before per-service history: the scripts
    applied and recorded, version and raw-text checksum only, in public.schema_migrations."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"CREATE TABLE {LEGACY_TABLE} (version BIGINT PRIMARY KEY, description TEXT NOT "
            "NULL, checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for migration in migrations_of("services.catalog")[:migrations_applied]:
            await conn.execute(migration.up_sql)
            await conn.execute(
                f"INSERT INTO {LEGACY_TABLE} VALUES ($1, $2, $3, '2025-01-02T03:04:05Z')",
                migration.version,
                migration.description,
                hashlib.sha256(migration.up_sql.encode()).hexdigest(),
            )
    finally:
        await conn.close()


async def test_a_database_of_the_old_runner_is_adopted_without_running_anything_again(
    scratch_dsn: str,
) -> None:
    await make_legacy_database(scratch_dsn, migrations_applied=4)
    catalog = catalog_runner(scratch_dsn)
    governance = MigrationRunner(scratch_dsn, migrations_of("services.governance"), "governance")

    # status reads the old table without changing anything (it takes no lock).
    states = await catalog.status()
    assert [s.applied for s in states] == [True] * 4 + [False] * (len(CATALOG_VERSIONS) - 4)
    assert LEGACY_TABLE in await tables(scratch_dsn)
    # Another service's runner leaves the catalog's rows alone (its 202501001 differs).
    assert [s.applied for s in await governance.status()] == [False]

    # Only what the old runner had not applied runs (202501001 again would fail:
    # its schema exists).
    assert [int(line.split()[1]) for line in await catalog.up()] == CATALOG_VERSIONS[4:]
    assert LEGACY_TABLE not in await tables(scratch_dsn)
    states = await catalog.status()
    assert all(s.applied for s in states)
    assert states[0].applied_at is not None and states[0].applied_at.year == 2025
    # The old raw-text checksums were rewritten in the normalized form.
    conn = await asyncpg.connect(scratch_dsn)
    try:
        checksums = dict(
            await conn.fetch(f"SELECT version, checksum FROM {TABLE} WHERE service = 'catalog'")
        )
    finally:
        await conn.close()
    assert checksums == {m.version: m.checksum for m in migrations_of("services.catalog")}
    assert await governance.up() == ["up 202501001 governance schema"]


async def test_down_and_to_refuse_to_run_without_a_service(
    scratch_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The scoped variable wins over the unscoped one, which points nowhere useful here.
    monkeypatch.setenv("CLOUDSHELF_POSTGRES_DSN", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("CLOUDSHELF_GOVERNANCE_POSTGRES_DSN", scratch_dsn)
    assert await asyncio.to_thread(cli_main, ["migrate", "up", "--service", "governance"]) == 0
    for argv in (["migrate", "down"], ["migrate", "to", "0"]):
        assert await asyncio.to_thread(cli_main, argv) == 2
        assert "--service" in capsys.readouterr().err
    assert "governance.data_classes" in await tables(scratch_dsn)

    assert await asyncio.to_thread(cli_main, ["migrate", "down", "--service", "governance"]) == 0
    assert "governance: down 202501001 governance schema" in capsys.readouterr().out
    assert "governance.data_classes" not in await tables(scratch_dsn)
