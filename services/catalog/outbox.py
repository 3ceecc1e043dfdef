"""The catalog's outbox: where its events wait for the relay, and who they come from.

Every service with an outbox has a `services/<name>/outbox.py` with OUTBOX; the CLI's
`cloudshelf outbox dead-letters|replay --service <name>` finds the tables there.
"""

from __future__ import annotations

from cloudshelf.runtime.events import OutboxTables

OUTBOX = OutboxTables("book_catalog.outbox", "book_catalog.outbox_dead_letters")
EVENT_SOURCE = "cloudshelf.catalog"
