"""The storefront owns no store: nothing to create."""

from __future__ import annotations

from cloudshelf.runtime.config import Settings


async def provision(settings: Settings) -> list[str]:
    return []
