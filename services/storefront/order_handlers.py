"""The order RPCs of StorefrontService (checkout, orders, cancel): validate, call, map.
The work is in services/storefront/orders.py."""

from __future__ import annotations

from cloudshelf.cart.v1 import cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2_grpc
from cloudshelf.runtime.auth import signed_in_caller
from cloudshelf.runtime.rpc import ServicerContext
from cloudshelf.storefront.v1 import storefront_pb2, storefront_pb2_grpc
from services.storefront.handlers import StorefrontHandlers
from services.storefront.orders import Orders, check_order_id


class OrderHandlers(storefront_pb2_grpc.StorefrontServiceServicer):
    """A mixin: the servicer (StorefrontServicer below) provides `orders`."""

    orders: Orders

    async def PlaceOrder(
        self, request: storefront_pb2.PlaceOrderRequest, context: ServicerContext
    ) -> storefront_pb2.PlaceOrderResponse:
        return await self.orders.place(signed_in_caller().subject, request)

    async def GetOrder(
        self, request: storefront_pb2.GetOrderRequest, context: ServicerContext
    ) -> storefront_pb2.GetOrderResponse:
        order_id = check_order_id("order_id", request.order_id)
        order = await self.orders.get(signed_in_caller().subject, order_id)
        return storefront_pb2.GetOrderResponse(order=order)

    async def ListOrders(
        self, request: storefront_pb2.ListOrdersRequest, context: ServicerContext
    ) -> storefront_pb2.ListOrdersResponse:
        return await self.orders.list(signed_in_caller().subject, request)

    async def CancelOrder(
        self, request: storefront_pb2.CancelOrderRequest, context: ServicerContext
    ) -> storefront_pb2.CancelOrderResponse:
        order_id = check_order_id("order_id", request.order_id)
        order = await self.orders.cancel(signed_in_caller().subject, order_id)
        return storefront_pb2.CancelOrderResponse(order=order)


class StorefrontServicer(OrderHandlers, StorefrontHandlers):
    """Every StorefrontService RPC: the cart view (handlers.py) and the orders."""

    def __init__(
        self,
        carts: cart_pb2_grpc.CartServiceAsyncStub,
        catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
        orders: Orders,
    ) -> None:
        super().__init__(carts, catalog)
        self.orders = orders
