"""Shard leases in DynamoDB, as the Kinesis Client Library keeps them.

One item per shard (`leaseKey` = the shard id) with its `leaseOwner` (a worker id) and a
`leaseCounter` that the owner increments at every renewal. Every write is conditional on
the counter (and owner) the writer last read, so two workers can never both believe they
took the same lease.

Expiry needs no synchronized clocks: a worker sees a lease as expired when its counter has
not moved for `lease_seconds` by the worker's own monotonic clock (KCL's rule). A killed
worker's leases are so taken over `lease_seconds` after its last renewal, plus at most one
round of the taker.

Balance: each worker aims at its fair share, ceil(leases / live workers), where live
workers are the owners of unexpired leases and itself. It takes free or expired leases up to
that share; when there are none and it is still below it, it steals one lease per round
from the worker holding the most, if that one holds more than the share.

Leases only decide who reads a shard. What has been written is decided by the checkpoint
in PostgreSQL, moved in the same transaction as the batch's rows and only from the value
the batch started from: a worker that lost its lease and still writes is refused there.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from cloudshelf.runtime.aws_resources import ensure_dynamodb_table

LEASE_KEY = "leaseKey"
OWNER = "leaseOwner"
COUNTER = "leaseCounter"


@dataclass(frozen=True)
class Lease:
    shard_id: str
    owner: str | None
    counter: int


def lease_table_definition(name: str) -> dict[str, Any]:
    return {
        "TableName": name,
        "KeySchema": [{"AttributeName": LEASE_KEY, "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": LEASE_KEY, "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }


class ExpiryClock:
    """When each lease's counter last moved, by this worker's clock."""

    def __init__(self, lease_seconds: float) -> None:
        self.lease_seconds = lease_seconds
        self._seen: dict[str, tuple[str | None, int, float]] = {}

    def observe(self, leases: Iterable[Lease], now: float) -> set[str]:
        """Records what a scan returned; returns the shard ids whose lease is expired."""
        expired = set()
        for lease in leases:
            seen = self._seen.get(lease.shard_id)
            if seen is None or seen[:2] != (lease.owner, lease.counter):
                self._seen[lease.shard_id] = (lease.owner, lease.counter, now)
                # A lease first seen counts as live: its owner gets a whole period to renew.
                continue
            if now - seen[2] >= self.lease_seconds:
                expired.add(lease.shard_id)
        return expired


@dataclass(frozen=True)
class Plan:
    take: list[Lease]
    steal: Lease | None
    share: int


def plan_leases(
    leases: Sequence[Lease],
    eligible: set[str],
    me: str,
    expired: set[str],
    rng: random.Random | None = None,
) -> Plan:
    """Which leases `me` should take this round (see the module's docstring)."""
    candidates = [lease for lease in leases if lease.shard_id in eligible]
    live = {
        lease.owner
        for lease in candidates
        if lease.owner is not None and lease.shard_id not in expired
    }
    live.add(me)
    share = math.ceil(len(candidates) / len(live)) if candidates else 0
    mine = sum(1 for lease in candidates if lease.owner == me)
    free = [
        lease
        for lease in candidates
        if lease.owner != me and (lease.owner is None or lease.shard_id in expired)
    ]
    (rng or random).shuffle(free)  # replicas starting together do not all race for one
    take = free[: max(0, share - mine)]
    steal = None
    if mine + len(take) < share:
        held: dict[str, list[Lease]] = {}
        for lease in candidates:
            if lease.owner is not None and lease.owner != me and lease.shard_id not in expired:
                held.setdefault(lease.owner, []).append(lease)
        if held:
            victim = max(held, key=lambda owner: (len(held[owner]), owner))
            if len(held[victim]) > share:
                steal = (rng or random).choice(held[victim])
    return Plan(take, steal, share)


def eligible_shards(shards: Sequence[Mapping[str, Any]], finished: set[str]) -> set[str]:
    """Shards to read now: not finished, and each parent (when still listed) finished:
    after a resharding, children are read only once their parents are read to the end, so
    one key's records stay in order."""
    listed = {shard["ShardId"] for shard in shards}
    eligible = set()
    for shard in shards:
        shard_id = shard["ShardId"]
        if shard_id in finished:
            continue
        parents = [shard.get("ParentShardId"), shard.get("AdjacentParentShardId")]
        if all(p is None or p not in listed or p in finished for p in parents):
            eligible.add(shard_id)
    return eligible


def _conditional_failed(exc: ClientError) -> bool:
    code: object = exc.response.get("Error", {}).get("Code")
    return code == "ConditionalCheckFailedException"


class LeaseTable:
    """The DynamoDB table of one stream's leases (aiobotocore client)."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self.dynamodb = dynamodb
        self.table = table

    async def ensure(self) -> bool:
        """Creates the table unless it exists, as the KCL does at start."""
        return await ensure_dynamodb_table(self.dynamodb, lease_table_definition(self.table), None)

    async def reachable(self) -> None:
        await self.dynamodb.describe_table(TableName=self.table)

    async def scan(self) -> list[Lease]:
        leases = []
        params: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        while True:
            page = await self.dynamodb.scan(**params)
            for item in page.get("Items", []):
                leases.append(
                    Lease(
                        item[LEASE_KEY]["S"],
                        item[OWNER]["S"] if OWNER in item else None,
                        int(item[COUNTER]["N"]),
                    )
                )
            if "LastEvaluatedKey" not in page:
                return leases
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def create(self, shard_id: str) -> None:
        """A free lease for a new shard (a no-op when another worker made it first)."""
        try:
            await self.dynamodb.put_item(
                TableName=self.table,
                Item={LEASE_KEY: {"S": shard_id}, COUNTER: {"N": "0"}},
                ConditionExpression="attribute_not_exists(#key)",
                ExpressionAttributeNames={"#key": LEASE_KEY},
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise

    async def _update(self, lease: Lease, owner: str | None) -> Lease | None:
        """Sets the owner (None: frees it) and bumps the counter if the lease is still as
        read; the new lease, or None when someone else changed it meanwhile."""
        names = {"#counter": COUNTER, "#owner": OWNER}
        values: dict[str, Any] = {":seen": {"N": str(lease.counter)}, ":one": {"N": "1"}}
        condition = "#counter = :seen"
        if lease.owner is None:
            condition += " AND attribute_not_exists(#owner)"
        else:
            condition += " AND #owner = :seen_owner"
            values[":seen_owner"] = {"S": lease.owner}
        if owner is None:
            update = "REMOVE #owner ADD #counter :one"
        else:
            update = "SET #owner = :owner ADD #counter :one"
            values[":owner"] = {"S": owner}
        try:
            await self.dynamodb.update_item(
                TableName=self.table,
                Key={LEASE_KEY: {"S": lease.shard_id}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return Lease(lease.shard_id, owner, lease.counter + 1)

    async def take(self, lease: Lease, me: str) -> Lease | None:
        """Takes a free, expired or stolen lease as read in the last scan."""
        return await self._update(lease, me)

    async def renew(self, lease: Lease) -> Lease | None:
        """None: the lease was taken by another worker (stop reading its shard)."""
        return await self._update(lease, lease.owner)

    async def release(self, lease: Lease) -> bool:
        """Frees a held lease (graceful shutdown, shard finished): others take it at once."""
        return await self._update(lease, None) is not None
