"""Creates the governance schema: its migrations, up to the latest."""

from __future__ import annotations

from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.migrations import migrate_to_latest


async def provision(settings: Settings) -> list[str]:
    return await migrate_to_latest(settings.postgres_dsn, "services.governance")
