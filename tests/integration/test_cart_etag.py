"""Carts through gRPC: the etag that GetCart and the storefront's view carry, and views of
carts larger than one catalog batch."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

import aioboto3

from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.devstack.stack import Stack
from cloudshelf.storefront.v1 import storefront_pb2, storefront_pb2_grpc
from tests.conftest import ChannelTo, NewUser


async def _store_cart(stack: Stack, user_id: str, version: int, lines: int = 1) -> None:
    """Writes a cart the way the cart service stores one (its RPCs cannot add more than
    100 lines, nor books the catalog lacks): `lines` books that the catalog does not have,
    `version` of each."""
    settings = stack.settings("cart")
    session = aioboto3.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
    )
    async with session.resource("dynamodb", endpoint_url=stack.aws.url) as dynamodb:
        table = await dynamodb.Table(settings.cart_table)
        await table.put_item(
            Item={
                "userId": f"user#{user_id}",
                "cartId": "current",
                "items": {
                    str(999_000_001 + line): {
                        "bookId": Decimal(999_000_001 + line),
                        "title": "Dune",
                        "priceMinor": Decimal(1099),
                        "quantity": Decimal(version),
                    }
                    for line in range(lines)
                },
                "lineCount": Decimal(lines),
                "currency": "USD",
                "version": Decimal(version),
                "lastModified": datetime.now(UTC).isoformat(),
                "expiresAt": Decimal(int(time.time()) + 3600),
            }
        )


async def test_a_carts_etag_follows_its_writes_and_reaches_the_storefront(
    stack: Stack, channel_to: ChannelTo, new_user: NewUser
) -> None:
    shopper = new_user()
    carts = cart_pb2_grpc.CartServiceStub(channel_to("cart", shopper.token))
    storefront = storefront_pb2_grpc.StorefrontServiceStub(channel_to("storefront", shopper.token))
    owner = cart_pb2.CartOwner(user_id=shopper.subject)

    async def etag() -> str:
        cart = (await carts.GetCart(cart_pb2.GetCartRequest(), timeout=5)).cart
        assert cart.owner == owner
        return cart.etag

    absent = await etag()
    assert absent, "a missing cart still has an etag (empty means no precondition)"

    await _store_cart(stack, owner.user_id, version=1)
    first = await etag()
    assert first != absent and first == await etag()
    view = await storefront.GetCartView(storefront_pb2.GetCartViewRequest(), timeout=5)
    assert view.cart_view.cart_etag == first

    await _store_cart(stack, owner.user_id, version=2)
    second = await etag()
    assert second not in (first, absent)
    view = await storefront.GetCartView(storefront_pb2.GetCartViewRequest(), timeout=5)
    assert view.cart_view.cart_etag == second


async def test_a_cart_larger_than_one_catalog_batch_is_viewed_whole(
    stack: Stack, channel_to: ChannelTo, new_user: NewUser
) -> None:
    # BatchGetBooks takes at most 1,000 ids: the storefront asks in batches.
    shopper = new_user()
    storefront = storefront_pb2_grpc.StorefrontServiceStub(channel_to("storefront", shopper.token))
    await _store_cart(stack, shopper.subject, version=1, lines=1_201)
    view = (await storefront.GetCartView(storefront_pb2.GetCartViewRequest(), timeout=10)).cart_view
    assert len(view.items) == 1_201 and not view.catalog_unavailable
    # The catalog answered every batch: none of these books is in it.
    assert all(
        line.availability == storefront_pb2.AVAILABILITY_NOT_IN_CATALOG for line in view.items
    )
