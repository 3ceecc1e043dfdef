"""The shared migration runner, on scratch databases of the test cluster."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from cloudshelf.devstack.stack import Stack
from cloudshelf.runtime.migrations import (
    MigrationError,
    MigrationRunner,
    load_migrations,
    migrations_of,
)


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
    runner = MigrationRunner(scratch_dsn, migrations_of("services.catalog"))
    applied = await runner.up()
    assert [line.split()[1] for line in applied] == [
        "202501001",
        "202509001",
        "202511001",
        "202511002",
        "202511101",
        "202511102",
    ]
    assert "book_catalog.series" in await tables(scratch_dsn)
    assert await runner.up() == []  # idempotent

    assert await runner.down() == ["down 202511102 outbox relay"]
    await runner.to(202501001)
    assert "book_catalog.series" not in await tables(scratch_dsn)
    states = await runner.status()
    assert [s.applied for s in states] == [True, False, False, False, False, False]

    await runner.to(0)
    assert not {t for t in await tables(scratch_dsn) if t.startswith("book_catalog.")}
    await runner.up()
    assert all(s.applied for s in await runner.status())


async def test_concurrent_runners_apply_each_migration_once(scratch_dsn: str) -> None:
    migrations = migrations_of("services.catalog")
    results = await asyncio.gather(
        *(MigrationRunner(scratch_dsn, migrations).up() for _ in range(3))
    )
    assert sorted(len(r) for r in results) == [0, 0, len(migrations)]


async def test_a_changed_migration_is_refused(scratch_dsn: str, tmp_path: Path) -> None:
    write(tmp_path, "1_first.up.sql", "CREATE TABLE t1 (id int);")
    write(tmp_path, "1_first.down.sql", "DROP TABLE t1;")
    await MigrationRunner(scratch_dsn, load_migrations(tmp_path)).up()
    write(tmp_path, "1_first.up.sql", "CREATE TABLE t1 (id bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await MigrationRunner(scratch_dsn, load_migrations(tmp_path)).up()


async def test_a_failing_migration_leaves_nothing_behind(scratch_dsn: str, tmp_path: Path) -> None:
    write(tmp_path, "1_ok.up.sql", "CREATE TABLE ok (id int);")
    write(tmp_path, "1_ok.down.sql", "DROP TABLE ok;")
    write(tmp_path, "2_broken.up.sql", "CREATE TABLE half (id int); SELECT no_such_function();")
    write(tmp_path, "2_broken.down.sql", "DROP TABLE half;")
    runner = MigrationRunner(scratch_dsn, load_migrations(tmp_path))
    with pytest.raises(asyncpg.exceptions.UndefinedFunctionError):
        await runner.up()
    assert [s.applied for s in await runner.status()] == [True, False]
    assert "public.half" not in await tables(scratch_dsn)


def test_migration_files_must_come_in_pairs(tmp_path: Path) -> None:
    write(tmp_path, "1_only_up.up.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match="both an up and a down"):
        load_migrations(tmp_path)
    write(tmp_path, "bad name.sql", "")
    with pytest.raises(MigrationError, match="expected"):
        load_migrations(tmp_path)
