"""CartService handlers: the caller's own cart, a signed-in user's or an anonymous session's
(services/cart/owners.py decides which)."""

from __future__ import annotations

from typing import Any

import grpc

from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.runtime.auth import caller, signed_in_caller
from cloudshelf.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from cloudshelf.runtime.idempotency import IdempotentCall
from cloudshelf.runtime.rpc import ServicerContext
from services.cart.owners import (
    SESSION_BOUND_TO_ANOTHER_USER,
    CartOwnerKey,
    cart_owner,
    check_session_holder,
    presented_credential,
    session_id_field,
)
from services.cart.sessions import SessionStore
from services.cart.store import (
    MAX_QUANTITY,
    STOCK_CHECK_ABOVE,
    BookSnapshot,
    CartStore,
    _answer,
    check_stock,
    user_owner_key,
)

# Ids the catalog's keys can hold (BIGINT).
MAX_BOOK_ID = 2**63 - 1
# An etag is ours (W/"<20 hex>"): anything much longer cannot match and is refused early.
MAX_ETAG_LENGTH = 64


def _book_id(value: int) -> int:
    if not 0 < value <= MAX_BOOK_ID:
        raise InvalidArgument("book_id", "must be a positive book id")
    return value


def _etag(value: str) -> str:
    if len(value) > MAX_ETAG_LENGTH:
        raise InvalidArgument("etag", f"at most {MAX_ETAG_LENGTH} characters: pass a Cart.etag")
    return value


def _quantity(value: int, *, least: int) -> int:
    if not least <= value <= MAX_QUANTITY:
        raise InvalidArgument(
            "quantity",
            f"must be {least}..{MAX_QUANTITY} (the per-line limit)",
            reason="QUANTITY_LIMIT",
        )
    return value


class CartHandlers(cart_pb2_grpc.CartServiceServicer):
    def __init__(
        self,
        carts: CartStore,
        sessions: SessionStore,
        catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    ) -> None:
        self.carts = carts
        self.sessions = sessions
        self.catalog = catalog

    async def _owner(self, context: ServicerContext) -> CartOwnerKey:
        return await cart_owner(context, self.sessions)

    async def GetCart(
        self, request: cart_pb2.GetCartRequest, context: ServicerContext
    ) -> cart_pb2.GetCartResponse:
        owner = await self._owner(context)
        return cart_pb2.GetCartResponse(cart=await self.carts.get(owner.owner, owner.key))

    async def AddItem(
        self, request: cart_pb2.AddItemRequest, context: ServicerContext
    ) -> cart_pb2.AddItemResponse:
        book_id = _book_id(request.book_id)
        quantity = _quantity(request.quantity, least=1)
        etag = _etag(request.etag)
        owner = await self._owner(context)
        call = IdempotentCall.of("cart.AddItem", request)
        book = await self._book(book_id)
        return await self.carts.add_item(
            owner.owner, owner.key, book, quantity, etag=etag, call=call
        )

    async def UpdateItemQuantity(
        self, request: cart_pb2.UpdateItemQuantityRequest, context: ServicerContext
    ) -> cart_pb2.UpdateItemQuantityResponse:
        book_id = _book_id(request.book_id)
        quantity = _quantity(request.quantity, least=0)
        etag = _etag(request.etag)
        owner = await self._owner(context)
        call = IdempotentCall.of("cart.UpdateItemQuantity", request)
        stock_seen = None
        if quantity > STOCK_CHECK_ABOVE:
            # A large line is checked against the catalog's live stock (the seed's rule).
            stock_seen = (await self._book(book_id)).stock
            check_stock(book_id, quantity, stock_seen)
        return await self.carts.set_quantity(
            owner.owner, owner.key, book_id, quantity, stock_seen=stock_seen, etag=etag, call=call
        )

    async def RemoveItem(
        self, request: cart_pb2.RemoveItemRequest, context: ServicerContext
    ) -> cart_pb2.RemoveItemResponse:
        book_id = _book_id(request.book_id)
        etag = _etag(request.etag)
        owner = await self._owner(context)
        call = IdempotentCall.of("cart.RemoveItem", request)
        return await self.carts.remove_item(owner.owner, owner.key, book_id, etag=etag, call=call)

    async def ClearCart(
        self, request: cart_pb2.ClearCartRequest, context: ServicerContext
    ) -> cart_pb2.ClearCartResponse:
        etag = _etag(request.etag)
        owner = await self._owner(context)
        call = IdempotentCall.of("cart.ClearCart", request)
        return await self.carts.clear(owner.owner, owner.key, etag=etag, call=call)

    async def MergeCarts(
        self, request: cart_pb2.MergeCartsRequest, context: ServicerContext
    ) -> cart_pb2.MergeCartsResponse:
        session_id = session_id_field(request.session_id)
        etag = _etag(request.etag)
        call = IdempotentCall.of("cart.MergeCarts", request)
        subject = signed_in_caller().subject
        cart = await merge_session_cart(
            self.carts, self.sessions, context, session_id, subject, etag=etag, call=call
        )
        return _answer(cart_pb2.MergeCartsResponse, cart)

    async def _book(self, book_id: int) -> BookSnapshot:
        """The catalog's title and current price of the book (the caller's token goes
        with the call)."""
        try:
            response = await self.catalog.GetBook(catalog_pb2.GetBookRequest(id=book_id))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(
                    f"the catalog has no book {book_id}",
                    reason="BOOK_NOT_FOUND",
                    metadata={"book_id": str(book_id)},
                ) from exc
            raise
        book = response.book
        if book.status != catalog_pb2.BOOK_STATUS_ACTIVE:
            raise FailedPrecondition(
                f"book {book_id} is not for sale ({catalog_pb2.BookStatus.Name(book.status)})",
                reason="BOOK_NOT_ACTIVE",
                metadata={"book_id": str(book_id)},
            )
        return BookSnapshot(
            book_id=book_id,
            title=book.title,
            price_minor=book.price.minor_units,
            currency=book.price.currency_code or "USD",
            stock=book.stock_quantity,
        )


async def merge_session_cart(
    carts: CartStore,
    sessions: SessionStore,
    context: ServicerContext,
    session_id: str,
    subject: str,
    *,
    etag: str,
    call: IdempotentCall | None,
) -> cart_pb2.Cart | bytes:
    """Binds the session to the signed-in `subject` and moves its cart into theirs (one
    transaction): the caller must hold the session (its credential, or already bound to
    them); a session bound to another user is refused (no session fixation)."""
    credential = presented_credential(context)

    async def binding(now: int) -> dict[str, Any] | None:
        item = await sessions.live(session_id)
        bound_to = item.get("userId")
        if bound_to and bound_to != subject:
            raise PermissionDenied(
                f"session {session_id} is bound to another user",
                reason=SESSION_BOUND_TO_ANOTHER_USER,
                metadata={"session_id": session_id},
            )
        check_session_holder(item, credential, caller())
        return None if bound_to == subject else sessions.binding(item, subject, now)

    return await carts.merge(
        cart_pb2.CartOwner(user_id=subject),
        user_owner_key(subject),
        session_id,
        binding,
        etag=etag,
        call=call,
    )
