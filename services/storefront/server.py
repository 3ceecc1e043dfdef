"""The storefront process: composes the cart and the catalog for the shop's pages, and
owns the orders placed at checkout (its own PostgreSQL schema, events through a
transactional outbox to EventBridge)."""

from __future__ import annotations

from contextlib import AsyncExitStack

from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloudshelf.cart.v1 import cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2_grpc
from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.health import Dependency
from cloudshelf.runtime.rpc import peer_channel
from cloudshelf.runtime.server import ServiceApp, Servicer, run_service
from cloudshelf.runtime.stores import open_outbox_relay, open_postgres
from cloudshelf.storefront.v1 import storefront_pb2, storefront_pb2_grpc
from services.storefront.order_handlers import StorefrontServicer
from services.storefront.orders import Orders, PricingRules
from services.storefront.outbox import EVENT_SOURCE, OUTBOX
from services.storefront.policy import STOREFRONT_POLICY


async def setup(settings: Settings, stack: AsyncExitStack) -> ServiceApp:
    channels = {}
    for peer in ("cart", "catalog"):
        channel = peer_channel(
            settings.peers[peer], settings.default_call_timeout, tls=settings.peer_tls
        )
        stack.push_async_callback(channel.close)
        channels[peer] = channel

    def peer_check(peer: str) -> Dependency:
        stub = health_pb2_grpc.HealthStub(channels[peer])

        async def check() -> None:
            response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            if status != "SERVING":
                raise RuntimeError(f"{peer} is {status}")

        # Without the catalog the storefront still shows carts (with stored prices).
        return Dependency(peer, check, required=peer == "cart")

    # Orders live in PostgreSQL: without it no checkout, so it is required.
    pool, postgres = await open_postgres(settings, stack)
    relay, event_bus = await open_outbox_relay(settings, stack, pool, OUTBOX, EVENT_SOURCE)

    carts = cart_pb2_grpc.CartServiceStub(channels["cart"])
    catalog = catalog_pb2_grpc.CatalogServiceStub(channels["catalog"])
    orders = Orders(pool, carts, catalog, relay, PricingRules.from_env())
    return ServiceApp(
        servicers=[
            Servicer(
                StorefrontServicer(carts, catalog, orders),
                storefront_pb2_grpc.add_StorefrontServiceServicer_to_server,
                storefront_pb2.DESCRIPTOR.services_by_name["StorefrontService"].full_name,
                STOREFRONT_POLICY,
            )
        ],
        # Order events wait in the outbox while the bus is down: degraded, not down.
        dependencies=[
            postgres,
            peer_check("cart"),
            peer_check("catalog"),
            event_bus,
        ],
        background=[relay.run],
    )


def main() -> None:
    run_service("storefront", setup)
