"""StorefrontService: read models composed from the other services."""

from __future__ import annotations

from cloudshelf.cart.v1 import cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2_grpc
from cloudshelf.runtime.rpc import ServicerContext
from cloudshelf.storefront.v1 import storefront_pb2, storefront_pb2_grpc
from services.storefront.cart_view import CartViews, CatalogBudget


class StorefrontHandlers(storefront_pb2_grpc.StorefrontServiceServicer):
    def __init__(
        self,
        carts: cart_pb2_grpc.CartServiceAsyncStub,
        catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    ) -> None:
        self.carts = carts
        self.catalog = catalog
        # The catalog's budget comes from the environment (cart_view.CATALOG_BUDGET_ENV).
        self.cart_views = CartViews(carts, catalog, CatalogBudget.from_env())

    async def GetCartView(
        self, request: storefront_pb2.GetCartViewRequest, context: ServicerContext
    ) -> storefront_pb2.GetCartViewResponse:
        # Nothing to validate: the cart is the caller's, named by the forwarded credentials.
        return storefront_pb2.GetCartViewResponse(cart_view=await self.cart_views.view())
