"""Checkout benchmark (issue 18): PlaceOrder of a 5-line cart, and orders per second.

    python -m bench.checkout --calls 200 --seconds 20

Starts the whole mesh on free ports (data in .state/bench-checkout), creates books with
plenty of stock, then:

- PlaceOrder p50/p95 for a 5-line cart, one shopper, sequential calls: each sample is
  one checkout (key, GetCart, BatchGetBooks, one AdjustInventory as the service, the
  order's transaction with its outbox event, ClearCart); filling the cart is done before
  each sample, outside the timed part;
- the peer calls a checkout makes, timed alone in turns (GetCart of the 5-line cart,
  BatchGetBooks of its 5 books, an AdjustInventory of 5 lines, a ClearCart of an empty
  cart): their p50s add up to the floor of a checkout that calls them one after another;
  the rest is the storefront's own work (its transaction, the key, the event);
- orders per second at 8 concurrent shoppers: each shopper fills its cart (5 AddItem
  calls) and checks out, in a loop, for `--seconds`; the figure is orders placed per
  second of wall time, the latency is PlaceOrder's alone under that load. The shoppers
  buy different books, so stock rows are not contended (a best seller's row would be:
  its AdjustInventory calls queue on one row lock).

Everything shares the machine's cores with PostgreSQL, Redis, moto and five services:
the figures are relative, not capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from bench.harness import Figures, figures_of, measure, measure_in_turns, report
from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.common.v1 import common_pb2
from cloudshelf.devstack.identity import ADMIN_USER
from cloudshelf.devstack.stack import REPO_ROOT, Stack, StackPorts
from cloudshelf.storefront.v1 import storefront_pb2, storefront_pb2_grpc

STATE = REPO_ROOT / ".state" / "bench-checkout"
LINES = 5
SHOPPERS = 8
STOCK = 1_000_000


class _Bearer(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),)

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        details = grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*(details.metadata or ()), *self.metadata),
            details.credentials,
            details.wait_for_ready,
        )
        return await continuation(details, request)


def channel(stack: Stack, service: str, token: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(stack.address(service), interceptors=[_Bearer(token)])


class Shopper:
    def __init__(self, stack: Stack, name: str, books: list[int]) -> None:
        stack.identity.ensure_user(name)
        token = stack.identity.token(name)
        self.token = token
        self.carts = cart_pb2_grpc.CartServiceStub(channel(stack, "cart", token))
        self.storefront = storefront_pb2_grpc.StorefrontServiceStub(
            channel(stack, "storefront", token)
        )
        self.books = books
        self.etag = ""

    async def fill(self, _: int = 0) -> None:
        for book_id in self.books:
            answer = await self.carts.AddItem(
                cart_pb2.AddItemRequest(book_id=book_id, quantity=1), timeout=10
            )
        self.etag = answer.cart.etag

    async def place(self, _: int = 0) -> storefront_pb2.PlaceOrderResponse:
        response: storefront_pb2.PlaceOrderResponse = await self.storefront.PlaceOrder(
            storefront_pb2.PlaceOrderRequest(
                request_id=str(uuid.uuid4()),
                cart_etag=self.etag,
                payment_method=storefront_pb2.PAYMENT_METHOD_CREDIT_CARD,
            ),
            timeout=10,
        )
        assert response.cart_cleared and len(response.order.lines) == LINES
        return response


def isbn13(n: int) -> str:
    body = f"979{(int(time.time()) * 1000 + n) % 10**9:09d}"
    total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


async def make_books(stack: Stack, count: int) -> list[int]:
    admin = catalog_pb2_grpc.CatalogServiceStub(
        channel(stack, "catalog", stack.identity.token(ADMIN_USER))
    )
    ids = []
    for i in range(count):
        book = catalog_pb2.Book(
            isbn_13=isbn13(i),
            title=f"Checkout bench book {i} {uuid.uuid4().hex[:6]}",
            price=common_pb2.Money(minor_units=1000 + i, currency_code="USD"),
            format=catalog_pb2.BOOK_FORMAT_PAPERBACK,
            language_code="en",
        )
        created = (await admin.CreateBook(catalog_pb2.CreateBookRequest(book=book))).book
        ids.append(created.id)
    await admin.AdjustInventory(
        catalog_pb2.AdjustInventoryRequest(
            adjustments=[catalog_pb2.InventoryAdjustment(book_id=i, delta=STOCK) for i in ids]
        )
    )
    return ids


async def peer_calls(stack: Stack, shopper: Shopper, calls: int) -> list[Figures]:
    """The checkout's peer calls alone: GetCart and ClearCart as the shopper, BatchGetBooks
    and AdjustInventory (5 lines, -1 each: stock is plentiful) as an admin."""
    admin = catalog_pb2_grpc.CatalogServiceStub(
        channel(stack, "catalog", stack.identity.token(ADMIN_USER))
    )
    other = Shopper(stack, f"bench-shopper-{uuid.uuid4().hex[:6]}", [])
    await shopper.fill()
    books = catalog_pb2.BatchGetBooksRequest(ids=shopper.books)

    async def get_cart(_: int) -> object:
        return await shopper.carts.GetCart(cart_pb2.GetCartRequest(), timeout=10)

    async def batch_get(_: int) -> object:
        return await admin.BatchGetBooks(books, timeout=10)

    async def adjust(_: int) -> object:
        request = catalog_pb2.AdjustInventoryRequest(
            adjustments=[
                catalog_pb2.InventoryAdjustment(book_id=b, delta=-1, is_purchase=True)
                for b in shopper.books
            ],
            request_id=str(uuid.uuid4()),
        )
        return await admin.AdjustInventory(request, timeout=10)

    async def clear(_: int) -> object:
        request = cart_pb2.ClearCartRequest(request_id=str(uuid.uuid4()))
        return await other.carts.ClearCart(request, timeout=10)

    return await measure_in_turns(
        {
            "  GetCart (5 lines)": get_cart,
            "  BatchGetBooks (5 ids)": batch_get,
            "  AdjustInventory (5 lines)": adjust,
            "  ClearCart": clear,
        },
        calls=calls,
        warmup=5,
    )


async def concurrent(shoppers: list[Shopper], seconds: float) -> tuple[Figures, float]:
    samples: list[float] = []
    placed = 0
    deadline = time.perf_counter() + seconds

    async def loop(shopper: Shopper) -> None:
        nonlocal placed
        while time.perf_counter() < deadline:
            await shopper.fill()
            t0 = time.perf_counter()
            await shopper.place()
            samples.append(time.perf_counter() - t0)
            placed += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(shopper) for shopper in shoppers))
    elapsed = time.perf_counter() - started
    return figures_of(f"PlaceOrder under {len(shoppers)} shoppers", samples), placed / elapsed


async def main(calls: int, seconds: float) -> None:
    stack = Stack(Path(STATE), StackPorts.free(), durable=False)
    try:
        stack.start_backing_servers()
        await stack.provision()
        stack.start_services()
        await asyncio.to_thread(stack.wait_until_serving)
        books = await make_books(stack, LINES * (SHOPPERS + 1))
        single = Shopper(stack, f"bench-shopper-{uuid.uuid4().hex[:6]}", books[:LINES])
        one = await measure(
            f"PlaceOrder, {LINES}-line cart",
            single.place,
            calls=calls,
            warmup=5,
            before_each=single.fill,
        )
        parts = await peer_calls(stack, single, calls)
        floor = sum(part.p50_ms for part in parts)
        crowd = [
            Shopper(
                stack,
                f"bench-shopper-{uuid.uuid4().hex[:6]}",
                books[LINES * (n + 1) : LINES * (n + 2)],
            )
            for n in range(SHOPPERS)
        ]
        loaded, per_second = await concurrent(crowd, seconds)
        report(
            "checkout",
            [
                (
                    one,
                    None,
                    f"the p50s of its peer calls, made alone, add up to {floor:.1f} ms",
                ),
                *((part, None, "") for part in parts),
                (
                    loaded,
                    None,
                    f"{per_second:.1f} orders/s at {SHOPPERS} concurrent shoppers "
                    f"(each fills a {LINES}-line cart, then checks out)",
                ),
            ],
            {"lines": LINES, "shoppers": SHOPPERS, "seconds": seconds},
        )
    finally:
        stack.down()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=200, help="sequential PlaceOrder samples")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the 8-shopper run")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    asyncio.run(main(args.calls, args.seconds))
