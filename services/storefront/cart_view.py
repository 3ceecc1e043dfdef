"""The cart view: the caller's cart composed with today's catalog data.

One GetCart, then one BatchGetBooks for the books of every line (several only beyond the
catalog's cap), never a call per line. The catalog is a nice-to-have here: when it is slow
or down the view is built from the cart's own snapshot (stored prices, availability
UNKNOWN, `catalog_unavailable`), and its call gets a budget that leaves time to answer
within the caller's deadline. The cart is not: without it there is nothing to show, and
its failures become statuses the caller can act on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.common.v1 import common_pb2
from cloudshelf.runtime.config import env_float
from cloudshelf.runtime.errors import Unavailable
from cloudshelf.runtime.rpc import remaining_time
from cloudshelf.storefront.v1 import storefront_pb2

log = logging.getLogger(__name__)

CATALOG_BUDGET_ENV = "CLOUDSHELF_STOREFRONT_CATALOG_BUDGET_SECONDS"
ANSWER_RESERVE_ENV = "CLOUDSHELF_STOREFRONT_ANSWER_RESERVE_SECONDS"

# The catalog's cap on BatchGetBooks ids (services/catalog/handlers.py MAX_BATCH); a cart
# holds at most 100 lines today, so one call always suffices.
CATALOG_BATCH = 1000
# Below this there is no point asking the catalog: the snapshot is answered at once.
_SMALLEST_CATALOG_BUDGET = 0.005

# The cart's answers that are about what the caller asked or who they are: passed on
# unchanged, with the cart's details.
_CART_CODES_PASSED_ON = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
CART_UNAVAILABLE = "CART_UNAVAILABLE"

Availability = storefront_pb2.Availability


@dataclass(frozen=True)
class CatalogBudget:
    """How long a view waits for the catalog before answering from the cart's snapshot."""

    # The most the catalog call may take (a warm BatchGetBooks takes milliseconds).
    seconds: float = 1.0
    # Kept back from the caller's deadline to build and send the answer (at most half of
    # what is left, so a short deadline still gives the catalog a chance).
    reserve: float = 0.1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CatalogBudget:
        budget = cls(
            seconds=env_float(CATALOG_BUDGET_ENV, cls.seconds, environ),
            reserve=env_float(ANSWER_RESERVE_ENV, cls.reserve, environ),
        )
        if budget.seconds <= 0 or budget.reserve < 0:
            raise ValueError(
                f"{CATALOG_BUDGET_ENV} must be > 0 and {ANSWER_RESERVE_ENV} >= 0, "
                f"got {budget.seconds} and {budget.reserve}"
            )
        return budget

    def for_call(self, remaining: float | None) -> float:
        """Seconds the catalog may take, given what is left of the caller's deadline
        (None: the caller set none)."""
        if remaining is None:
            return self.seconds
        reserve = min(self.reserve, remaining / 2)
        return max(0.0, min(self.seconds, remaining - reserve))


def availability(book: catalog_pb2.Book, quantity: int) -> storefront_pb2.Availability.ValueType:
    """Whether `quantity` copies of `book` can be bought, by the catalog's data."""
    if book.status != catalog_pb2.BOOK_STATUS_ACTIVE:
        return storefront_pb2.AVAILABILITY_NOT_FOR_SALE
    if book.stock_quantity <= 0:
        return storefront_pb2.AVAILABILITY_OUT_OF_STOCK
    if book.stock_quantity < quantity:
        return storefront_pb2.AVAILABILITY_INSUFFICIENT_STOCK
    return storefront_pb2.AVAILABILITY_AVAILABLE


def build_cart_view(
    cart: cart_pb2.Cart, books: Mapping[int, catalog_pb2.Book] | None
) -> storefront_pb2.CartView:
    """Combines a cart with the catalog's books by id (None: the catalog could not be
    asked, and the view shows the cart's snapshot)."""
    currency = cart.total_amount.currency_code
    view = storefront_pb2.CartView(
        owner=cart.owner,
        total_items=cart.total_items,
        total_amount=cart.total_amount,
        cart_etag=cart.etag,
        catalog_unavailable=books is None,
    )
    current_total = 0
    for item in cart.items:
        line = view.items.add(item=item)
        if books is None:
            line.availability = storefront_pb2.AVAILABILITY_UNKNOWN
            line.current_price.CopyFrom(item.unit_price)
            current_total += item.unit_price.minor_units * item.quantity
            continue
        book = books.get(item.book_id)
        if book is None:
            # Cannot be bought at any price: no current price, not in today's total.
            line.availability = storefront_pb2.AVAILABILITY_NOT_IN_CATALOG
            continue
        line.availability = availability(book, item.quantity)
        line.current_price.CopyFrom(book.price)
        line.price_changed = book.price != item.unit_price
        line.stock_quantity = book.stock_quantity
        line.cover_image_url = book.cover_image_url
        current_total += book.price.minor_units * item.quantity
    view.total_current_amount.CopyFrom(
        common_pb2.Money(minor_units=current_total, currency_code=currency)
    )
    return view


class CartViews:
    """Builds the caller's cart view from the cart and catalog services (peer_channel
    stubs: the caller's credentials and deadline go with every call)."""

    def __init__(
        self,
        carts: cart_pb2_grpc.CartServiceAsyncStub,
        catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
        budget: CatalogBudget,
    ) -> None:
        self.carts = carts
        self.catalog = catalog
        self.budget = budget

    async def view(self) -> storefront_pb2.CartView:
        cart = await self._cart()
        books = await self._books(cart) if cart.items else {}
        return build_cart_view(cart, books)

    async def _cart(self) -> cart_pb2.Cart:
        """The caller's cart; the cart service decides whose from the forwarded credentials."""
        try:
            return (await self.carts.GetCart(cart_pb2.GetCartRequest())).cart
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in _CART_CODES_PASSED_ON:
                raise  # the runtime passes a peer's status on with its details
            left = remaining_time()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and left is not None and left <= 0:
                raise  # the caller's own deadline has passed
            # Down, too slow, or failing: nothing the caller can fix; retrying later may work.
            log.warning("cart service failed (%s): %s", code.name, exc.details())
            raise Unavailable(
                f"the cart service could not answer ({code.name}); retry later",
                reason=CART_UNAVAILABLE,
                metadata={"peer": "cart", "peer_code": code.name},
            ) from exc

    async def _books(self, cart: cart_pb2.Cart) -> dict[int, catalog_pb2.Book] | None:
        """The books of the cart's lines by id, or None when the catalog could not answer
        within its budget."""
        budget = self.budget.for_call(remaining_time())
        if budget < _SMALLEST_CATALOG_BUDGET:
            log.warning("no time left to ask the catalog: showing the cart's snapshot")
            return None
        give_up_at = time.monotonic() + budget
        ids = sorted({item.book_id for item in cart.items})
        books: dict[int, catalog_pb2.Book] = {}
        try:
            for start in range(0, len(ids), CATALOG_BATCH):
                answer = await self.catalog.BatchGetBooks(
                    catalog_pb2.BatchGetBooksRequest(ids=ids[start : start + CATALOG_BATCH]),
                    timeout=max(give_up_at - time.monotonic(), 0.0),
                )
                books.update((book.id, book) for book in answer.books)
        except grpc.aio.AioRpcError as exc:
            # Whatever the catalog's trouble, the cart can still be shown as stored.
            log.warning(
                "catalog failed (%s) within %.3f s, showing the cart's snapshot: %s",
                exc.code().name,
                budget,
                exc.details(),
            )
            return None
        return books
