"""The five services run, report real health, expose reflection, and trace across hops."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cloudshelf.cart.v1 import cart_pb2
from cloudshelf.devstack.stack import REPO_ROOT, Stack
from cloudshelf.storefront.v1 import storefront_pb2, storefront_pb2_grpc
from tests.conftest import ChannelTo, NewUser
from tests.otlp_receiver import OtlpReceiver

Channels = Callable[[str], grpc.aio.Channel]

EXPECTED_SERVICES = {
    "catalog": {"cloudshelf.catalog.v1.CatalogService"},
    "cart": {
        "cloudshelf.cart.v1.CartService",
        "cloudshelf.cart.v1.SessionService",
        "cloudshelf.cart.v1.NotificationService",
    },
    "analytics": {"cloudshelf.analytics.v1.AnalyticsService"},
    "governance": {"cloudshelf.governance.v1.GovernanceService"},
    "storefront": {"cloudshelf.storefront.v1.StorefrontService"},
}
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3


async def test_every_service_is_serving(channel_to: Channels) -> None:
    for service, names in EXPECTED_SERVICES.items():
        health = health_pb2_grpc.HealthStub(channel_to(service))
        for name in ["", *names]:
            response = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, (service, name)


async def test_every_service_lists_its_api_over_reflection(channel_to: Channels) -> None:
    for service, names in EXPECTED_SERVICES.items():
        stub = reflection_pb2_grpc.ServerReflectionStub(channel_to(service))
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        listed = set()
        async for response in stub.ServerReflectionInfo(iter([request]), timeout=5):
            listed |= {s.name for s in response.list_services_response.service}
        assert names | {"grpc.health.v1.Health"} <= listed, service


def test_buf_curl_reaches_services_over_reflection(stack: Stack) -> None:
    buf = shutil.which("buf") or str(Path(REPO_ROOT, ".venv/bin/buf"))
    result = subprocess.run(
        [
            buf,
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--list-methods",
            f"http://{stack.address('catalog')}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "cloudshelf.catalog.v1.CatalogService/SearchBooks" in result.stdout.split()


async def test_a_new_shopper_gets_an_empty_cart_view_of_their_own(
    channel_to: ChannelTo, new_user: NewUser
) -> None:
    shopper = new_user()
    storefront = storefront_pb2_grpc.StorefrontServiceStub(channel_to("storefront", shopper.token))
    response = await storefront.GetCartView(storefront_pb2.GetCartViewRequest(), timeout=5)
    # The owner is the caller, from the token forwarded by the storefront to the cart.
    assert response.cart_view.owner == cart_pb2.CartOwner(user_id=shopper.subject)
    assert len(response.cart_view.items) == 0
    assert response.cart_view.total_amount.currency_code == "USD"


async def test_a_cart_view_without_a_token_is_unauthenticated(channel_to: ChannelTo) -> None:
    storefront = storefront_pb2_grpc.StorefrontServiceStub(channel_to("storefront", None))
    try:
        await storefront.GetCartView(storefront_pb2.GetCartViewRequest(), timeout=5)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization" in (exc.details() or "")
    else:
        raise AssertionError("expected UNAUTHENTICATED")


async def test_trace_context_crosses_the_storefront_to_cart_hop(
    channel_to: ChannelTo, otlp: OtlpReceiver, shopper_token: str
) -> None:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    storefront = storefront_pb2_grpc.StorefrontServiceStub(channel_to("storefront", shopper_token))
    await storefront.GetCartView(
        storefront_pb2.GetCartViewRequest(),
        metadata=(("traceparent", f"00-{trace_id}-{caller_span}-01"),),
        timeout=5,
    )
    spans = otlp.wait_for(trace_id, {"storefront", "cart"})
    by_id = {s.span_id: s for s in spans}
    storefront_server = next(
        s for s in spans if s.service_name == "storefront" and s.kind == SPAN_KIND_SERVER
    )
    assert storefront_server.parent_span_id == caller_span
    cart_server = next(s for s in spans if s.service_name == "cart" and s.kind == SPAN_KIND_SERVER)
    assert cart_server.name == "/cloudshelf.cart.v1.CartService/GetCart"
    hop = by_id[cart_server.parent_span_id]
    assert hop.service_name == "storefront" and hop.kind == SPAN_KIND_CLIENT
    assert hop.parent_span_id == storefront_server.span_id
