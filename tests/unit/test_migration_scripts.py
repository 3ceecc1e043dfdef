"""Pure parts of the migration runner: checksums, the no-transaction marker, statement
splitting; and which DSN a service's settings resolve to."""

from __future__ import annotations

import pytest

from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.migrations import (
    MigrationTimeouts,
    checksum_of,
    runs_outside_transaction,
    statements_of,
)


def test_checksum_ignores_line_endings_trailing_whitespace_and_bom() -> None:
    lf = "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n"
    for variant in (
        "CREATE TABLE t (id int);\r\nINSERT INTO t VALUES (1);\r\n",
        "CREATE TABLE t (id int);   \nINSERT INTO t VALUES (1);\t\n\n\n",
        "\ufeffCREATE TABLE t (id int);\rINSERT INTO t VALUES (1);",
    ):
        assert checksum_of(variant) == checksum_of(lf)
    assert checksum_of(lf.replace("(1)", "(2)")) != checksum_of(lf)
    # Leading whitespace inside a line is content (e.g. in a string literal).
    assert checksum_of("SELECT 'a  b';") != checksum_of("SELECT 'a b';")


@pytest.mark.parametrize(
    ("script", "outside"),
    [
        ("-- cloudshelf:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);", True),
        ("-- Why: a big table.\n\n  -- cloudshelf:no-transaction  \r\nCREATE INDEX ...;", True),
        ("CREATE TABLE t (id int);\n-- cloudshelf:no-transaction\n", False),
        ("-- cloudshelf:no-transaction-please\nSELECT 1;", False),
        ("SELECT 1;", False),
    ],
)
def test_the_marker_counts_only_among_the_leading_comments(script: str, outside: bool) -> None:
    assert runs_outside_transaction(script) is outside


def test_statements_split_only_between_statements() -> None:
    script = (
        "-- cloudshelf:no-transaction\n"
        "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN NEW.n := OLD.n + 1; RETURN NEW; END $$;\n"
        "CREATE INDEX CONCURRENTLY i ON t (a); /* a; comment */\n"
        "SELECT 'a;b', \"we;ird\" FROM t;\n"
        "DO $body$ BEGIN PERFORM 1; END $body$;\n"
        "-- a trailing comment; alone\n"
    )
    statements = statements_of(script)
    assert len(statements) == 4
    assert statements[0].rstrip().endswith("END $$;")
    assert statements[1] == "CREATE INDEX CONCURRENTLY i ON t (a);"
    assert "SELECT 'a;b', \"we;ird\" FROM t;" in statements[2]
    assert statements[3] == "DO $body$ BEGIN PERFORM 1; END $body$;"


def test_migration_timeouts_from_the_environment() -> None:
    assert MigrationTimeouts.from_env({}) == MigrationTimeouts(lock=5.0, statement=1800.0)
    assert MigrationTimeouts.from_env(
        {
            "CLOUDSHELF_MIGRATION_LOCK_TIMEOUT_SECONDS": "0.25",
            "CLOUDSHELF_MIGRATION_STATEMENT_TIMEOUT_SECONDS": "0",
        }
    ) == MigrationTimeouts(lock=0.25, statement=0.0)
    with pytest.raises(ValueError, match="CLOUDSHELF_MIGRATION_LOCK_TIMEOUT_SECONDS"):
        MigrationTimeouts.from_env({"CLOUDSHELF_MIGRATION_LOCK_TIMEOUT_SECONDS": "soon"})


def test_a_service_reads_its_own_dsn_first() -> None:
    environ = {
        "CLOUDSHELF_POSTGRES_DSN": "postgresql://shared/db",
        "CLOUDSHELF_CATALOG_POSTGRES_DSN": "postgresql://catalog/db",
    }
    assert Settings.from_env("catalog", environ).postgres_dsn == "postgresql://catalog/db"
    assert Settings.from_env("analytics", environ).postgres_dsn == "postgresql://shared/db"
    assert (
        Settings.from_env("governance", {}).postgres_dsn
        == "postgresql://cloudshelf@127.0.0.1:15432/governance"
    )
