"""No secrets or personal data in telemetry (issue 16): a flow with a shopper's token and
a client IP address in the request metadata, through the storefront, the cart and the
catalog, with refusals on the way; then every service's log file and every span exported
to the OTLP receiver are searched for the token and the address."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import grpc

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.catalog.v1 import catalog_pb2_grpc
from cloudshelf.devstack.stack import Stack
from cloudshelf.storefront.v1 import storefront_pb2, storefront_pb2_grpc
from tests.conftest import ChannelTo, NewUser, bearer
from tests.factories import book
from tests.otlp_receiver import OtlpReceiver

# TEST-NET-3 (RFC 5737): an address that nothing else in the stack uses.
CLIENT_IP = "203.0.113.77"
SPAN_KIND_SERVER = 2


async def test_no_token_or_client_address_in_logs_or_spans(
    stack: Stack, state_dir: Path, channel_to: ChannelTo, new_user: NewUser, otlp: OtlpReceiver
) -> None:
    shopper = new_user()
    trace_id = secrets.token_hex(16)
    metadata = (
        ("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),
        ("x-forwarded-for", f"{CLIENT_IP}, 10.0.0.1"),
        ("x-real-ip", CLIENT_IP),
    )
    admin_catalog: catalog_pb2_grpc.CatalogServiceAsyncStub = catalog_pb2_grpc.CatalogServiceStub(
        channel_to("catalog")
    )  # type: ignore[assignment]
    target = (await admin_catalog.CreateBook(pb.CreateBookRequest(book=book()))).book

    as_shopper = channel_to("catalog", None)
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub = catalog_pb2_grpc.CatalogServiceStub(
        as_shopper
    )  # type: ignore[assignment]
    storefront = storefront_pb2_grpc.StorefrontServiceStub(channel_to("storefront", None))
    with_token = (*metadata, *bearer(shopper.token))
    await storefront.GetCartView(storefront_pb2.GetCartViewRequest(), metadata=with_token)
    await catalog.AddReview(
        pb.AddReviewRequest(review=pb.Review(book_id=target.id, rating=4)), metadata=with_token
    )
    await catalog.GetBook(pb.GetBookRequest(id=target.id), metadata=with_token)
    # Refusals: a shopper on an admin RPC, a tampered token, a write with no token.
    tampered = shopper.token[:-4] + ("AAAA" if not shopper.token.endswith("AAAA") else "BBBB")
    for call in (
        catalog.CreateBook(pb.CreateBookRequest(book=book()), metadata=with_token),
        catalog.GetBook(pb.GetBookRequest(id=target.id), metadata=(*metadata, *bearer(tampered))),
        catalog.AddReview(pb.AddReviewRequest(review=pb.Review(book_id=1)), metadata=metadata),
    ):
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            assert exc.code() in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.UNAUTHENTICATED,
            )
        else:
            raise AssertionError("expected a refusal")

    spans = otlp.wait_for(trace_id, {"storefront", "cart", "catalog"})
    await asyncio.sleep(1.0)  # the rest of the flow's spans and log lines are flushed

    secrets_to_find = {
        "the token": shopper.token.encode(),
        "the token's signature": shopper.token.rsplit(".", 1)[1].encode(),
        "the tampered token": tampered.encode(),
        "the client address": CLIENT_IP.encode(),
    }
    exported = otlp.exported_bytes()
    logs = {path.name: path.read_bytes() for path in (state_dir / "logs").glob("*.log")}
    assert {"catalog.log", "cart.log", "storefront.log"} <= set(logs)
    found = [
        f"{what} in {where}"
        for what, needle in secrets_to_find.items()
        for where, haystack in {"exported spans": exported, **logs}.items()
        if needle in haystack
    ]
    assert not found, found
    # The transport address of the caller is not kept either.
    server_spans = [s for s in spans if s.kind == SPAN_KIND_SERVER]
    assert server_spans
    for span in server_spans:
        assert span.attributes.get("net.peer.ip", "redacted") == "redacted", span
