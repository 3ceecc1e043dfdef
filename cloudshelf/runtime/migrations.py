"""Versioned SQL migrations for any service's PostgreSQL database.

A service keeps `<version>_<name>.up.sql` and `<version>_<name>.down.sql` in its
`migrations/` folder. Each migration runs in its own transaction; the whole run holds an
advisory lock so two runners (two pods, a Helm hook and a developer) never interleave.
Applied migrations are recorded with a checksum of their up script; a changed script is
refused rather than silently skipped.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

_FILE = re.compile(r"^(?P<version>\d+)_(?P<name>[a-z0-9_]+)\.(?P<direction>up|down)\.sql$")
# Any constant works; it only has to be the same for every runner of the database.
_LOCK_KEY = 0x636C6F7564  # "cloud"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS public.schema_migrations (
    version     BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    checksum    TEXT NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    up_sql: str
    down_sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.up_sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationState:
    migration: Migration
    applied_at: datetime | None

    @property
    def applied(self) -> bool:
        return self.applied_at is not None


def load_migrations(directory: Path) -> list[Migration]:
    scripts: dict[int, dict[str, str]] = {}
    names: dict[int, str] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: expected <version>_<name>.(up|down).sql")
        version = int(match["version"])
        if names.setdefault(version, match["name"]) != match["name"]:
            raise MigrationError(f"version {version} is used by two migrations")
        scripts.setdefault(version, {})[match["direction"]] = path.read_text()
    migrations = []
    for version in sorted(scripts):
        pair = scripts[version]
        if set(pair) != {"up", "down"}:
            raise MigrationError(f"migration {version} needs both an up and a down script")
        description = names[version].replace("_", " ")
        migrations.append(Migration(version, description, pair["up"], pair["down"]))
    return migrations


class MigrationRunner:
    def __init__(self, dsn: str, migrations: list[Migration]) -> None:
        self.dsn = dsn
        self.migrations = migrations
        self.by_version = {m.version: m for m in migrations}

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.dsn)
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(_CREATE_TABLE)
        return conn

    async def _applied(self, conn: asyncpg.Connection) -> dict[int, asyncpg.Record]:
        rows = await conn.fetch(
            "SELECT version, checksum, applied_at FROM public.schema_migrations"
        )
        applied = {r["version"]: r for r in rows}
        for version, row in applied.items():
            known = self.by_version.get(version)
            if known is None:
                raise MigrationError(
                    f"database has migration {version}, which this code does not know"
                )
            if known.checksum != row["checksum"]:
                raise MigrationError(
                    f"migration {version} ({known.description}) changed after it was applied"
                )
        return applied

    async def status(self) -> list[MigrationState]:
        conn = await self._connect()
        try:
            applied = await self._applied(conn)
        finally:
            await conn.close()
        return [
            MigrationState(m, applied[m.version]["applied_at"] if m.version in applied else None)
            for m in self.migrations
        ]

    async def to(self, target: int | None) -> list[str]:
        """Moves the schema to `target` (None: the latest), up or down; returns what it did."""
        if target is not None and target != 0 and target not in self.by_version:
            raise MigrationError(f"unknown migration version {target}")
        done: list[str] = []
        conn = await self._connect()
        try:
            applied = await self._applied(conn)
            for migration in self.migrations:
                if migration.version in applied or (
                    target is not None and migration.version > target
                ):
                    continue
                async with conn.transaction():
                    await conn.execute(migration.up_sql)
                    await conn.execute(
                        "INSERT INTO public.schema_migrations (version, description, checksum) "
                        "VALUES ($1, $2, $3)",
                        migration.version,
                        migration.description,
                        migration.checksum,
                    )
                done.append(f"up {migration.version} {migration.description}")
            if target is not None:
                for migration in reversed(self.migrations):
                    if migration.version <= target or migration.version not in applied:
                        continue
                    async with conn.transaction():
                        await conn.execute(migration.down_sql)
                        await conn.execute(
                            "DELETE FROM public.schema_migrations WHERE version = $1",
                            migration.version,
                        )
                    done.append(f"down {migration.version} {migration.description}")
        finally:
            await conn.close()  # also releases the advisory lock
        return done

    async def up(self) -> list[str]:
        return await self.to(None)

    async def down(self) -> list[str]:
        """Reverts the latest applied migration."""
        applied = [s.migration.version for s in await self.status() if s.applied]
        if not applied:
            return []
        earlier = [v for v in (m.version for m in self.migrations) if v < applied[-1]]
        return await self.to(earlier[-1] if earlier else 0)


def migrations_of(service_package: str) -> list[Migration]:
    """The migrations shipped in a service package's `migrations/` folder."""
    module = importlib.import_module(service_package)
    assert module.__file__ is not None
    return load_migrations(Path(module.__file__).parent / "migrations")


async def migrate_to_latest(dsn: str, service_package: str) -> list[str]:
    return await MigrationRunner(dsn, migrations_of(service_package)).up()
