"""StorefrontService: carts enriched with live catalog data."""

from __future__ import annotations

import logging

import grpc

from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.common.v1 import common_pb2
from cloudshelf.runtime.rpc import ServicerContext
from cloudshelf.storefront.v1 import storefront_pb2, storefront_pb2_grpc

log = logging.getLogger(__name__)

# Catalog answers that mean "no live data now"; the view then shows the stored cart.
_CATALOG_DOWN = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
)
# The catalog's cap on BatchGetBooks ids; a larger cart is asked for in several batches.
CATALOG_BATCH = 1000


def build_cart_view(
    cart: cart_pb2.Cart, books: dict[int, catalog_pb2.Book] | None
) -> storefront_pb2.CartView:
    """Combines a cart with catalog books (None: the catalog could not be asked)."""
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
        book = books.get(item.book_id) if books is not None else None
        if book is None:
            # Counted at the price it was added at. Only a catalog that answered can say
            # the book is gone; when it could not be asked, the book is assumed still there.
            line.current_price.CopyFrom(item.unit_price)
            line.in_catalog = books is None
            current_total += item.unit_price.minor_units * item.quantity
            continue
        line.in_catalog = True
        line.current_price.CopyFrom(book.price)
        line.price_changed = book.price.minor_units != item.unit_price.minor_units
        line.stock_quantity = book.stock_quantity
        line.available = (
            book.status == catalog_pb2.BOOK_STATUS_ACTIVE and book.stock_quantity >= item.quantity
        )
        line.cover_image_url = book.cover_image_url
        current_total += book.price.minor_units * item.quantity
    view.total_current_amount.CopyFrom(
        common_pb2.Money(minor_units=current_total, currency_code=currency)
    )
    return view


class StorefrontHandlers(storefront_pb2_grpc.StorefrontServiceServicer):
    def __init__(
        self,
        carts: cart_pb2_grpc.CartServiceAsyncStub,
        catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    ) -> None:
        self.carts = carts
        self.catalog = catalog

    async def GetCartView(
        self, request: storefront_pb2.GetCartViewRequest, context: ServicerContext
    ) -> storefront_pb2.GetCartViewResponse:
        # The caller's token goes with the call (rpc.peer_channel): the cart service
        # answers with the caller's own cart, and checks the token again.
        cart = (await self.carts.GetCart(cart_pb2.GetCartRequest())).cart
        books: dict[int, catalog_pb2.Book] | None = {}
        if cart.items:
            ids = sorted({item.book_id for item in cart.items})
            found: dict[int, catalog_pb2.Book] = {}
            try:
                # One call for any usual cart; batches one after another beyond the cap.
                for i in range(0, len(ids), CATALOG_BATCH):
                    answer = await self.catalog.BatchGetBooks(
                        catalog_pb2.BatchGetBooksRequest(ids=ids[i : i + CATALOG_BATCH])
                    )
                    found.update((book.id, book) for book in answer.books)
                books = found
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _CATALOG_DOWN:
                    raise
                log.warning("catalog unavailable, showing stored cart data: %s", exc.details())
                books = None
        return storefront_pb2.GetCartViewResponse(cart_view=build_cart_view(cart, books))
