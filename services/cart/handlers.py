"""CartService handlers."""

from __future__ import annotations

from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.runtime.rpc import ServicerContext
from services.cart.store import CartStore


class CartHandlers(cart_pb2_grpc.CartServiceServicer):
    def __init__(self, carts: CartStore) -> None:
        self.carts = carts

    async def GetCart(
        self, request: cart_pb2.GetCartRequest, context: ServicerContext
    ) -> cart_pb2.GetCartResponse:
        return cart_pb2.GetCartResponse(cart=await self.carts.get(request.owner))
