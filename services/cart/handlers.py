"""CartService handlers."""

from __future__ import annotations

from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.runtime.auth import signed_in_caller
from cloudshelf.runtime.rpc import ServicerContext
from services.cart.store import CartStore


class CartHandlers(cart_pb2_grpc.CartServiceServicer):
    def __init__(self, carts: CartStore) -> None:
        self.carts = carts

    async def GetCart(
        self, request: cart_pb2.GetCartRequest, context: ServicerContext
    ) -> cart_pb2.GetCartResponse:
        # The caller's own cart: the owner comes from the token, never from the request.
        owner = cart_pb2.CartOwner(user_id=signed_in_caller().subject)
        return cart_pb2.GetCartResponse(cart=await self.carts.get(owner))
