"""The storefront's outbox: where order events wait for the relay, and who they come from
(`cloudshelf outbox dead-letters|replay --service storefront` finds the tables here)."""

from __future__ import annotations

from cloudshelf.runtime.events import OutboxTables

OUTBOX = OutboxTables("storefront.outbox", "storefront.outbox_dead_letters")
EVENT_SOURCE = "cloudshelf.storefront"
