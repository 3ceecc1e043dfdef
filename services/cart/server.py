"""The cart service process: carts and sessions on DynamoDB; price-change notifications
from the catalog's events (an SQS queue fed by an EventBridge rule)."""

from __future__ import annotations

from contextlib import AsyncExitStack

from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2_grpc
from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.events import EventBridgePublisher
from cloudshelf.runtime.health import Dependency
from cloudshelf.runtime.idempotency import DynamoDBIdempotencyKeys
from cloudshelf.runtime.rpc import peer_channel
from cloudshelf.runtime.server import ServiceApp, Servicer, run_service
from cloudshelf.runtime.stores import aws_session, open_aws_client
from services.cart.handlers import CartHandlers
from services.cart.notification_handlers import NotificationHandlers
from services.cart.notifications import (
    BookHolders,
    NotificationStore,
    PriceChangeConsumer,
    consumer_policy,
)
from services.cart.policy import CART_POLICY, NOTIFICATION_POLICY, SESSION_POLICY
from services.cart.session_handlers import SessionHandlers
from services.cart.sessions import SessionStore
from services.cart.store import CartStore
from services.cart.stream import (
    EVENT_SOURCE,
    CartStreamProcessor,
    StreamPolicy,
    run_on_own_thread,
)
from services.cart.tables import (
    book_holders_table_name,
    notifications_table_name,
    request_ids_table_name,
    stream_leases_table_name,
)

SERVICES = cart_pb2.DESCRIPTOR.services_by_name


async def setup(settings: Settings, stack: AsyncExitStack) -> ServiceApp:
    session = aws_session(settings)
    dynamodb_client = await open_aws_client(session, stack, "dynamodb", settings)
    request_ids = request_ids_table_name(settings.cart_table)
    request_id_keys = DynamoDBIdempotencyKeys(dynamodb_client, request_ids)
    carts = CartStore(dynamodb_client, settings.cart_table, request_id_keys)
    sessions = SessionStore(dynamodb_client, settings.sessions_table, request_id_keys)
    # Titles and prices come from the catalog, asked with the caller's token.
    catalog_channel = peer_channel(
        settings.peers["catalog"], settings.default_call_timeout, tls=settings.peer_tls
    )
    stack.push_async_callback(catalog_channel.close)
    catalog = catalog_pb2_grpc.CatalogServiceStub(catalog_channel)
    notifications_table = notifications_table_name(settings.cart_table)
    notifications = NotificationStore(dynamodb_client, notifications_table)
    price_changes = PriceChangeConsumer(
        await open_aws_client(session, stack, "sqs", settings),
        settings.cart_price_changes_queue,
        BookHolders(dynamodb_client, book_holders_table_name(settings.cart_table)),
        notifications,
        consumer_policy(),
    )

    async def stream_processor(clients: AsyncExitStack) -> CartStreamProcessor:
        # Clients of its own: the processor runs on its own thread and event loop.
        own = aws_session(settings)
        events = await open_aws_client(own, clients, "events", settings)
        return CartStreamProcessor(
            await open_aws_client(own, clients, "dynamodb", settings),
            await open_aws_client(own, clients, "dynamodbstreams", settings),
            EventBridgePublisher(events, settings.event_bus, EVENT_SOURCE),
            settings.cart_table,
            StreamPolicy.from_env(),
        )

    async def cart_stream() -> None:
        """The cart's events, from its table's stream: a processor in every replica,
        sharing the shards by leases."""
        await run_on_own_thread(stream_processor)

    async def tables_ready() -> None:
        for table in (
            settings.cart_table,
            settings.sessions_table,
            request_ids,
            notifications_table,
            book_holders_table_name(settings.cart_table),
            stream_leases_table_name(settings.cart_table),
        ):
            description = await dynamodb_client.describe_table(TableName=table)
            if description["Table"]["TableStatus"] not in ("ACTIVE", "UPDATING"):
                raise RuntimeError(f"table {table} is {description['Table']['TableStatus']}")

    return ServiceApp(
        servicers=[
            Servicer(
                CartHandlers(carts, sessions, catalog),  # type: ignore[arg-type]  # an aio stub
                cart_pb2_grpc.add_CartServiceServicer_to_server,
                SERVICES["CartService"].full_name,
                CART_POLICY,
            ),
            Servicer(
                SessionHandlers(sessions, carts),
                cart_pb2_grpc.add_SessionServiceServicer_to_server,
                SERVICES["SessionService"].full_name,
                SESSION_POLICY,
            ),
            Servicer(
                NotificationHandlers(notifications, sessions),
                cart_pb2_grpc.add_NotificationServiceServicer_to_server,
                SERVICES["NotificationService"].full_name,
                NOTIFICATION_POLICY,
            ),
        ],
        dependencies=[Dependency("dynamodb", tables_ready)],
        background=[price_changes.run, cart_stream],
    )


def main() -> None:
    run_service("cart", setup)
