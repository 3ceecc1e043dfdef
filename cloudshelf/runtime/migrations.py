"""Versioned SQL migrations for any service's PostgreSQL database.

A service keeps `<version>_<name>.up.sql` and `<version>_<name>.down.sql` in its
`migrations/` folder. Applied migrations are recorded per service in one shared table,
`public.cloudshelf_migrations (service, version, ...)`, so services that share a database
(one schema each) keep separate histories and never refuse each other's versions.

Safety rules:
- The whole run (`up`, `down`, `to`) holds an advisory lock, so two runners (two pods, a
  Helm hook and a developer) never interleave. `status` takes no lock: it reads the table
  and never waits behind a running migration.
- Migration connections set `lock_timeout` (CLOUDSHELF_MIGRATION_LOCK_TIMEOUT_SECONDS,
  default 5) and `statement_timeout` (CLOUDSHELF_MIGRATION_STATEMENT_TIMEOUT_SECONDS,
  default 1800; 0: none). An `ALTER TABLE` queued behind a long query would otherwise block
  every new query on that table until it got its lock; with the timeout the migration fails
  fast, nothing of it is applied, and it can be retried.
- Each migration runs in its own transaction, unless its script starts with the marker
  line `-- cloudshelf:no-transaction` (among its leading comment lines). Such a script runs
  statement by statement, each committed on its own, which `CREATE INDEX CONCURRENTLY` and
  `DROP INDEX CONCURRENTLY` require. A failure part-way leaves the earlier statements
  applied and the migration unrecorded, so write these scripts to be run again safely:
  `DROP INDEX CONCURRENTLY IF EXISTS x;` (it also removes the invalid index a failed
  concurrent build leaves) before `CREATE INDEX CONCURRENTLY x ...`. Keep one such
  statement per script where you can.
- Applied migrations are recorded with a checksum of their up and down scripts, taken
  after normalizing line endings and trailing whitespace (a CRLF checkout or an editor
  that trims lines changes nothing). A changed up script is refused rather than silently
  skipped; a changed down script is refused when it would run. Ship a new version instead.
- Databases migrated before this table existed have `public.schema_migrations` (versions
  only, one service per database): a runner adopts its rows when every one of them is a
  migration of its service with a matching checksum, copies them, and drops the old table,
  so nothing runs twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg
import sqlparse

from cloudshelf.runtime.config import env_float

_FILE = re.compile(r"^(?P<version>\d+)_(?P<name>[a-z0-9_]+)\.(?P<direction>up|down)\.sql$")
# Any constant works; it only has to be the same for every runner of the database.
_LOCK_KEY = 0x636C6F7564  # "cloud"
_LOCK_POLL_SECONDS = 0.05
NO_TRANSACTION_MARKER = "-- cloudshelf:no-transaction"

TABLE = "public.cloudshelf_migrations"
LEGACY_TABLE = "public.schema_migrations"

_CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    service       TEXT NOT NULL,
    version       BIGINT NOT NULL,
    description   TEXT NOT NULL,
    checksum      TEXT NOT NULL,
    -- NULL for rows adopted from public.schema_migrations, which did not record it.
    down_checksum TEXT,
    applied_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (service, version)
)
"""


class MigrationError(Exception):
    pass


def normalized_sql(text: str) -> str:
    """The script as its checksum sees it: LF line endings, no trailing whitespace, no
    byte-order mark, no blank lines at either end."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def checksum_of(text: str) -> str:
    return hashlib.sha256(normalized_sql(text).encode()).hexdigest()


def _legacy_checksum(text: str) -> str:
    """How the runner hashed scripts before normalizing them (the text as read)."""
    return hashlib.sha256(text.encode()).hexdigest()


def runs_outside_transaction(sql: str) -> bool:
    """True when the marker is among the script's leading comment lines."""
    for line in normalized_sql(sql).split("\n"):
        stripped = line.strip()
        if stripped == NO_TRANSACTION_MARKER:
            return True
        if stripped and not stripped.startswith("--"):
            return False
    return False


def statements_of(sql: str) -> list[str]:
    """The script's statements, for the no-transaction mode. sqlparse knows PostgreSQL's
    quoting (strings, identifiers, $tag$ bodies, comments), so a `;` inside any of them
    never splits a statement."""
    statements = []
    for statement in sqlparse.split(sql):
        if sqlparse.format(statement, strip_comments=True).strip():
            statements.append(statement)
    return statements


@dataclass(frozen=True)
class MigrationTimeouts:
    """Seconds a migration connection waits for a lock, and runs one statement (0: none)."""

    lock: float = 5.0
    statement: float = 1800.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MigrationTimeouts:
        return cls(
            lock=env_float("CLOUDSHELF_MIGRATION_LOCK_TIMEOUT_SECONDS", cls.lock, environ),
            statement=env_float(
                "CLOUDSHELF_MIGRATION_STATEMENT_TIMEOUT_SECONDS", cls.statement, environ
            ),
        )


def _milliseconds(seconds: float) -> str:
    return str(max(0, round(seconds * 1000)))


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    up_sql: str
    down_sql: str

    @property
    def checksum(self) -> str:
        return checksum_of(self.up_sql)

    @property
    def down_checksum(self) -> str:
        return checksum_of(self.down_sql)

    def matches(self, recorded_checksum: str) -> bool:
        """The recorded checksum is this up script's, hashed the new way or the old way."""
        return recorded_checksum in (self.checksum, _legacy_checksum(self.up_sql))


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
        scripts.setdefault(version, {})[match["direction"]] = path.read_text(encoding="utf-8")
    migrations = []
    for version in sorted(scripts):
        pair = scripts[version]
        if set(pair) != {"up", "down"}:
            raise MigrationError(f"migration {version} needs both an up and a down script")
        description = names[version].replace("_", " ")
        migrations.append(Migration(version, description, pair["up"], pair["down"]))
    return migrations


class MigrationRunner:
    """Moves one service's schema; `service` names its rows in the migrations table."""

    def __init__(
        self,
        dsn: str,
        migrations: list[Migration],
        service: str,
        timeouts: MigrationTimeouts | None = None,
    ) -> None:
        if not service:
            raise ValueError("a migration runner needs the service's name")
        self.dsn = dsn
        self.migrations = migrations
        self.service = service
        self.timeouts = timeouts or MigrationTimeouts.from_env()
        self.by_version = {m.version: m for m in migrations}

    async def _open(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self.dsn,
            server_settings={
                "application_name": f"cloudshelf-migrate {self.service}"[:63],
                "lock_timeout": _milliseconds(self.timeouts.lock),
                "statement_timeout": _milliseconds(self.timeouts.statement),
            },
        )

    async def _connect_locked(self) -> asyncpg.Connection:
        conn = await self._open()
        try:
            # Waiting for another runner is expected (it may build an index for minutes):
            # lock_timeout is for the schema's locks, not for this queue.
            # Polled, not waited for in pg_advisory_lock: a session blocked in a statement
            # holds a snapshot, and CREATE INDEX CONCURRENTLY in the runner holding the
            # lock waits for every older snapshot to end (a deadlock).
            while True:
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
                    break
                await asyncio.sleep(_LOCK_POLL_SECONDS)
            await conn.execute(_CREATE_TABLE)
            await self._adopt_legacy(conn)
        except BaseException:
            conn.terminate()  # may be cancelled while waiting for the lock
            raise
        return conn

    async def _exists(self, conn: asyncpg.Connection, table: str) -> bool:
        return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table))

    async def _recorded(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        if not await self._exists(conn, TABLE):
            return []
        return list(
            await conn.fetch(
                f"SELECT version, checksum, down_checksum, applied_at FROM {TABLE} "
                "WHERE service = $1",
                self.service,
            )
        )

    async def _legacy_rows(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        """The rows of public.schema_migrations when they are this service's, else []."""
        if not await self._exists(conn, LEGACY_TABLE):
            return []
        rows = await conn.fetch(
            f"SELECT version, description, checksum, applied_at FROM {LEGACY_TABLE}"
        )
        ours = {
            r["version"]
            for r in rows
            if r["version"] in self.by_version
            and self.by_version[r["version"]].matches(r["checksum"])
        }
        if not ours:
            return []  # another service's (or empty): its own runner adopts it
        if len(ours) != len(rows):
            strangers = sorted(r["version"] for r in rows if r["version"] not in ours)
            raise MigrationError(
                f"{LEGACY_TABLE} holds {self.service} migrations, and versions {strangers} "
                "that this code does not know or whose scripts changed after they were "
                "applied: restore those scripts (or correct that table) before migrating"
            )
        return list(rows)

    async def _adopt_legacy(self, conn: asyncpg.Connection) -> None:
        if await self._recorded(conn):
            return
        rows = await self._legacy_rows(conn)
        if not rows:
            return
        async with conn.transaction():
            for row in rows:
                migration = self.by_version[row["version"]]
                await conn.execute(
                    f"INSERT INTO {TABLE} (service, version, description, checksum, applied_at) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    self.service,
                    migration.version,
                    row["description"],
                    migration.checksum,
                    row["applied_at"],
                )
            await conn.execute(f"DROP TABLE {LEGACY_TABLE}")

    def _verify(self, rows: list[asyncpg.Record]) -> dict[int, asyncpg.Record]:
        applied = {r["version"]: r for r in rows}
        for version, row in applied.items():
            known = self.by_version.get(version)
            if known is None:
                raise MigrationError(
                    f"{self.service}: database has migration {version}, "
                    "which this code does not know"
                )
            if not known.matches(row["checksum"]):
                raise MigrationError(
                    f"{self.service}: migration {version} ({known.description}) "
                    "changed after it was applied"
                )
        return applied

    async def status(self) -> list[MigrationState]:
        """Read only, no advisory lock: never waits behind a running migration."""
        conn = await self._open()
        try:
            rows = await self._recorded(conn) or await self._legacy_rows(conn)
            applied = self._verify(rows)
        finally:
            await conn.close()
        return [
            MigrationState(m, applied[m.version]["applied_at"] if m.version in applied else None)
            for m in self.migrations
        ]

    async def to(self, target: int | None) -> list[str]:
        """Moves the schema to `target` (None: the latest), up or down; returns what it did."""
        if target is not None and target != 0 and target not in self.by_version:
            raise MigrationError(f"{self.service}: unknown migration version {target}")
        done: list[str] = []
        conn = await self._connect_locked()
        try:
            applied = self._verify(await self._recorded(conn))
            await self._upgrade_checksums(conn, applied)
            for migration in self.migrations:
                if migration.version in applied or (
                    target is not None and migration.version > target
                ):
                    continue
                await self._run(conn, migration, "up")
                done.append(f"up {migration.version} {migration.description}")
            if target is not None:
                for migration in reversed(self.migrations):
                    if migration.version <= target or migration.version not in applied:
                        continue
                    recorded = applied[migration.version]["down_checksum"]
                    if recorded is not None and recorded != migration.down_checksum:
                        raise MigrationError(
                            f"{self.service}: the down script of migration "
                            f"{migration.version} ({migration.description}) changed after "
                            "its up was applied; revert it, or ship a new migration instead"
                        )
                    await self._run(conn, migration, "down")
                    done.append(f"down {migration.version} {migration.description}")
        finally:
            await conn.close()  # also releases the advisory lock
        return done

    async def _upgrade_checksums(
        self, conn: asyncpg.Connection, applied: dict[int, asyncpg.Record]
    ) -> None:
        """Rewrites checksums hashed the old way (raw text) in the normalized form."""
        for version, row in applied.items():
            migration = self.by_version[version]
            if row["checksum"] != migration.checksum:
                await conn.execute(
                    f"UPDATE {TABLE} SET checksum = $3 WHERE service = $1 AND version = $2",
                    self.service,
                    version,
                    migration.checksum,
                )

    async def _run(self, conn: asyncpg.Connection, migration: Migration, direction: str) -> None:
        sql = migration.up_sql if direction == "up" else migration.down_sql
        args: tuple[object, ...]
        if direction == "up":
            record = (
                f"INSERT INTO {TABLE} (service, version, description, checksum, down_checksum) "
                "VALUES ($1, $2, $3, $4, $5)"
            )
            args = (
                self.service,
                migration.version,
                migration.description,
                migration.checksum,
                migration.down_checksum,
            )
        else:
            record = f"DELETE FROM {TABLE} WHERE service = $1 AND version = $2"
            args = (self.service, migration.version)
        what = (
            f"{self.service} migration {migration.version} ({migration.description}, {direction})"
        )
        try:
            if runs_outside_transaction(sql):
                statements = statements_of(sql)
                for number, statement in enumerate(statements, start=1):
                    try:
                        await conn.execute(statement)
                    except asyncpg.PostgresError as exc:
                        raise MigrationError(
                            f"{what} failed at statement {number} of {len(statements)} "
                            f"({self._reason(exc)}); it runs without a transaction, so the "
                            "statements before it stay applied and the migration is not "
                            "recorded: fix the cause and run it again"
                        ) from exc
                await conn.execute(record, *args)
            else:
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(record, *args)
        except (asyncpg.LockNotAvailableError, asyncpg.QueryCanceledError) as exc:
            raise MigrationError(
                f"{what} stopped: {self._reason(exc)}; nothing of it was applied, retry later"
            ) from exc

    def _reason(self, exc: asyncpg.PostgresError) -> str:
        if isinstance(exc, asyncpg.LockNotAvailableError):
            return (
                f"it waited more than {self.timeouts.lock:g}s for a lock that another session "
                "holds (see pg_stat_activity; CLOUDSHELF_MIGRATION_LOCK_TIMEOUT_SECONDS)"
            )
        if isinstance(exc, asyncpg.QueryCanceledError):
            return (
                f"a statement ran longer than {self.timeouts.statement:g}s "
                "(CLOUDSHELF_MIGRATION_STATEMENT_TIMEOUT_SECONDS)"
            )
        return f"{type(exc).__name__}: {exc}"

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


def runner_for(dsn: str, service_package: str) -> MigrationRunner:
    """The runner of a service package such as `services.catalog` (service "catalog")."""
    service = service_package.rsplit(".", 1)[-1]
    return MigrationRunner(dsn, migrations_of(service_package), service)


async def migrate_to_latest(dsn: str, service_package: str) -> list[str]:
    return await runner_for(dsn, service_package).up()
