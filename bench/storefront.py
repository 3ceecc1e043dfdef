"""Storefront benchmark (issue 18): GetCartView against the calls a client would otherwise
make itself.

    python -m bench.storefront --books 2000 --calls 1000 --sizes 1,5,20

For each cart size (20 lines is the issue's headline; smaller carts are reported too,
worst ratio first), the same shopper's cart is read three ways, in turns (one call of each
per round, bench.harness.measure_in_turns), so the machine's noise falls on all alike:

- GetCartView through the storefront (one GetCart, one BatchGetBooks, composed);
- (a) the naive path: GetCart, then one GetBook per line, one after another;
- (b) the floor: GetCart, then one BatchGetBooks of all lines, made directly by the
  client (what the storefront does, without the extra gRPC hop and the composing).

Targets: GetCartView <= 1/5 of (a) and <= 1.3x of (b), at p50 and p95, for every size.
The catalog's cache is warm (the warm-up rounds read every book). A bare gRPC hop
(Health/Check on the storefront) is measured in the same turns as the lowest floor.
It starts its own PostgreSQL, Redis, AWS emulator, catalog, cart and storefront on free
ports (data in .state/bench-storefront) and stops them at the end.

Sections: `cart_view_section` returns its rows; another section (checkout) appends its
own rows in `run` and they are printed in one table.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.harness import Figures, measure_in_turns, report
from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.devstack.stack import REPO_ROOT, Stack, StackPorts
from cloudshelf.runtime.auth import AUTHORIZATION
from cloudshelf.storefront.v1 import storefront_pb2, storefront_pb2_grpc

STATE = REPO_ROOT / ".state" / "bench-storefront"
SERVICES = ("catalog", "cart", "storefront")
# GetCartView at most this share of the naive path, and at most this multiple of the floor.
NAIVE_TARGET = 1 / 5
FLOOR_TARGET = 1.3
Rows = list[tuple[Figures, Figures | None, str]]
Call = Callable[[int], Awaitable[object]]


@dataclass(frozen=True)
class Clients:
    """Stubs on one channel per service; calls carry a shopper's token per call."""

    storefront: storefront_pb2_grpc.StorefrontServiceAsyncStub
    cart: cart_pb2_grpc.CartServiceAsyncStub
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub
    health: health_pb2_grpc.HealthStub
    channels: tuple[grpc.aio.Channel, ...]

    @classmethod
    def open(cls, stack: Stack) -> Clients:
        channels = {name: grpc.aio.insecure_channel(stack.address(name)) for name in SERVICES}
        return cls(
            storefront_pb2_grpc.StorefrontServiceStub(channels["storefront"]),  # type: ignore[arg-type]
            cart_pb2_grpc.CartServiceStub(channels["cart"]),  # type: ignore[arg-type]
            catalog_pb2_grpc.CatalogServiceStub(channels["catalog"]),  # type: ignore[arg-type]
            health_pb2_grpc.HealthStub(channels["storefront"]),
            tuple(channels.values()),
        )

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return ((AUTHORIZATION, f"Bearer {token}"),)


async def active_book_ids(stack: Stack, count: int) -> list[int]:
    conn = await asyncpg.connect(stack.postgres.dsn("catalog"))
    try:
        rows = await conn.fetch(
            "SELECT id FROM book_catalog.books WHERE status = 'active' ORDER BY random() LIMIT $1",
            count,
        )
    finally:
        await conn.close()
    if len(rows) < count:
        raise RuntimeError(f"need {count} active books, the catalog has {len(rows)}")
    return [row["id"] for row in rows]


async def shopper_with_cart(stack: Stack, clients: Clients, book_ids: list[int]) -> str:
    """A new shopper whose cart holds one copy of each book; returns their token."""
    name = f"bench-{len(book_ids)}-{secrets.token_hex(3)}"
    await asyncio.to_thread(stack.identity.ensure_user, name, [])
    token = await asyncio.to_thread(stack.identity.token, name)
    for book_id in book_ids:
        await clients.cart.AddItem(
            cart_pb2.AddItemRequest(book_id=book_id, quantity=1),
            metadata=_bearer(token),
            timeout=10,
        )
    return token


def _worst(view: Figures, other: Figures) -> float:
    return max(view.p50_ms / other.p50_ms, view.p95_ms / other.p95_ms)


def _ratio_note(size: int, view: Figures, other: Figures, target: float, label: str) -> str:
    p50, p95 = view.p50_ms / other.p50_ms, view.p95_ms / other.p95_ms
    verdict = "meets" if max(p50, p95) <= target else "MISSES"
    return (
        f"{size:>2} lines: GetCartView / {label}: p50 {p50:.3f}, p95 {p95:.3f} "
        f"(target <= {target:.2f}): {verdict}"
    )


async def cart_view_section(
    stack: Stack, clients: Clients, sizes: list[int], calls: int
) -> tuple[Rows, list[str]]:
    """Rows of the table, and the ratio notes worst first."""
    books = await active_book_ids(stack, sum(sizes))
    rows: Rows = []
    notes: list[tuple[float, str]] = []
    hop_figures: Figures | None = None
    offset = 0
    for size in sizes:
        ids = books[offset : offset + size]
        offset += size
        metadata = _bearer(await shopper_with_cart(stack, clients, ids))

        async def view(i: int, metadata: tuple[tuple[str, str]] = metadata) -> object:
            answer = await clients.storefront.GetCartView(
                storefront_pb2.GetCartViewRequest(), metadata=metadata, timeout=10
            )
            if answer.cart_view.catalog_unavailable:
                raise RuntimeError("the storefront answered from the cart's snapshot")
            return answer

        async def naive(
            i: int, metadata: tuple[tuple[str, str]] = metadata
        ) -> list[catalog_pb2.Book]:
            cart = await clients.cart.GetCart(
                cart_pb2.GetCartRequest(), metadata=metadata, timeout=10
            )
            return [
                (
                    await clients.catalog.GetBook(
                        catalog_pb2.GetBookRequest(id=line.book_id), metadata=metadata, timeout=10
                    )
                ).book
                for line in cart.cart.items
            ]

        async def floor(
            i: int, metadata: tuple[tuple[str, str]] = metadata
        ) -> list[catalog_pb2.Book]:
            cart = await clients.cart.GetCart(
                cart_pb2.GetCartRequest(), metadata=metadata, timeout=10
            )
            ids = [line.book_id for line in cart.cart.items]
            answer = await clients.catalog.BatchGetBooks(
                catalog_pb2.BatchGetBooksRequest(ids=ids), metadata=metadata, timeout=10
            )
            return list(answer.books)

        # The same data three ways before any timing (prices and stock of every line).
        shown = (await view(0)).cart_view  # type: ignore[attr-defined]
        seen = {
            line.item.book_id: (line.current_price, line.stock_quantity) for line in shown.items
        }
        for way in (naive, floor):
            fetched = {b.id: (b.price, b.stock_quantity) for b in await way(0)}
            assert fetched == seen, f"{way.__name__} disagrees with GetCartView"
        assert len(seen) == size

        cases: dict[str, Call] = {
            f"GetCartView, {size} lines": view,
            f"(a) naive: GetCart + {size} GetBook": naive,
            f"(b) floor: GetCart + BatchGetBooks({size})": floor,
        }
        if hop_figures is None:
            cases["floor: gRPC hop (Health/Check)"] = lambda i: clients.health.Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        figures = await measure_in_turns(cases, calls=calls, warmup=30, max_seconds=240)
        view_f, naive_f, floor_f = figures[:3]
        if hop_figures is None:
            hop_figures = figures[3]
        naive_note = _ratio_note(size, view_f, naive_f, NAIVE_TARGET, "(a) naive")
        floor_note = _ratio_note(size, view_f, floor_f, FLOOR_TARGET, "(b) floor")
        # No implementation beats the floor: when (b) itself is above 1/5 of (a), the (a)
        # target is out of reach on this machine whatever the storefront does.
        reach = _worst(floor_f, naive_f)
        reach_note = (
            f"{size:>2} lines: the floor (b) / (a) naive is {reach:.3f} at worst "
            f"(GetCartView cannot go below it)"
        )
        rows += [
            (view_f, naive_f, ""),
            (view_f, floor_f, ""),
            (naive_f, None, ""),
            (floor_f, None, ""),
        ]
        # Worst first: how far each ratio is above (or below) its target.
        notes.append((_worst(view_f, naive_f) / NAIVE_TARGET, naive_note))
        notes.append((_worst(view_f, floor_f) / FLOOR_TARGET, floor_note))
        notes.append((_worst(view_f, naive_f) / NAIVE_TARGET - 1e-9, reach_note))
    if hop_figures is not None:
        rows.append((hop_figures, None, ""))
    return rows, [note for _, note in sorted(notes, reverse=True)]


async def run(stack: Stack, sizes: list[int], calls: int) -> None:
    clients = Clients.open(stack)
    try:
        rows, notes = await cart_view_section(stack, clients, sizes, calls)
        # A further section (checkout) adds its rows and notes here, in the same run.
    finally:
        await clients.close()
    report(
        "storefront",
        rows,
        {"cart_sizes": ",".join(map(str, sizes)), "calls_per_case": calls},
    )
    print("\nratios, worst first:")
    for note in notes:
        print(f"  {note}")


async def main(books: int, sizes: list[int], calls: int) -> None:
    stack = Stack(STATE, StackPorts.free(), durable=False)
    try:
        stack.start_backing_servers()
        await stack.provision()
        print("\n".join(await stack.load_demo_data(books)))
        stack.start_services(SERVICES)
        stack.wait_until_serving(SERVICES)
        await run(stack, sizes, calls)
    finally:
        stack.down()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--books", type=int, default=2000, help="demo books (loaded once)")
    parser.add_argument("--calls", type=int, default=1000, help="calls per case and size")
    parser.add_argument(
        "--sizes", default="1,5,20", help="cart sizes in lines, comma-separated (at most 100)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    asyncio.run(main(args.books, [int(s) for s in args.sizes.split(",")], args.calls))
