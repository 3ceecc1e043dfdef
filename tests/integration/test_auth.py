"""Authentication and per-RPC authorization through gRPC, with tokens from the stack's
Cognito pool (moto) and tokens forged here.

Forged tokens are signed either with a key of our own (the issuer does not publish it) or
with moto's own signing key, which ships inside moto (its `kid` is "dummy"): that one
makes tokens the services accept unless a claim is wrong, so each claim check is reached.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf import descriptor_pool
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from moto.utilities.utils import load_resource

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.catalog.v1 import catalog_pb2_grpc
from cloudshelf.devstack.stack import SERVICES, Stack
from cloudshelf.runtime import auth
from cloudshelf.runtime.auth import PUBLIC, Policy, Role
from cloudshelf.runtime.config import AuthSettings
from cloudshelf.runtime.rpc import ServerErrorInterceptor, ServicerContext
from tests.conftest import (
    CatalogAs,
    ChannelTo,
    NewUser,
    ServiceSpawner,
    User,
    bearer,
    expect_error,
    wait_for_health,
)
from tests.error_details import Details, details_of_error
from tests.factories import book, word

if TYPE_CHECKING:
    from cloudshelf.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub as Catalog
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
CREATE_AUTHOR = "/cloudshelf.catalog.v1.CatalogService/CreateAuthor"
OWN_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
MOTO_KEY = jwt.PyJWK(load_resource("cognitoidp/resources/jwks-private.json"))
# Open to anyone without a check: probes and API discovery.
OPEN = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


def policies_of(process: str) -> dict[str, Policy]:
    module = importlib.import_module(f"services.{process}.policy")
    tables: dict[str, Policy] = module.POLICIES
    return tables


def forge(
    stack: Stack,
    *,
    key: Any = None,
    kid: str = "dummy",
    algorithm: str = "RS256",
    **overrides: Any,
) -> str:
    """A token like the pool's access tokens, with `overrides` (None removes a claim)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": stack.identity.issuer,
        "sub": f"forged-{secrets.token_hex(4)}",
        "client_id": stack.identity.client_id,
        "token_use": "access",
        "iat": now,
        "exp": now + 600,
        "username": "forged",
        "cognito:groups": ["admins"],
    }
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    signing_key = MOTO_KEY.key if key is None else key
    return jwt.encode(claims, signing_key, algorithm=algorithm, headers={"kid": kid})


async def call_create_author(channel: grpc.aio.Channel, token: str | None) -> Details:
    """CreateAuthor (admins and services only) with `token`; returns the refusal."""
    stub: Catalog = catalog_pb2_grpc.CatalogServiceStub(channel)  # type: ignore[assignment]
    request = pb.CreateAuthorRequest(author=pb.Author(first_name="Auth", last_name=word()))
    metadata = bearer(token) if token is not None else ()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateAuthor(request, metadata=metadata, timeout=10)
    return details_of_error(caught.value)


# --- authentication --------------------------------------------------------------------


async def test_each_token_failure_is_unauthenticated_naming_the_problem(
    stack: Stack, channel_to: ChannelTo, new_user: NewUser
) -> None:
    channel = channel_to("catalog", None)
    user = new_user()
    an_hour_ago = int(time.time()) - 3600
    cases: list[tuple[str, str | None, str, str]] = [
        ("missing", None, auth.TOKEN_MISSING, "needs a signed-in caller"),
        ("not a JWT", "not-a-jwt", auth.TOKEN_MALFORMED, "not a JWT"),
        ("three dots", "a.b.c", auth.TOKEN_MALFORMED, "not a JWT"),
        (
            "signed with our own key, moto's kid",
            forge(stack, key=OWN_KEY),
            auth.TOKEN_SIGNATURE_INVALID,
            "signature does not verify",
        ),
        (
            "signed with our own key and kid",
            forge(stack, key=OWN_KEY, kid="ours"),
            auth.TOKEN_SIGNATURE_INVALID,
            "key the issuer does not publish",
        ),
        (
            "HS256 with a shared secret",
            forge(stack, key="a-shared-secret-long-enough-for-hs256", algorithm="HS256"),
            auth.TOKEN_ALGORITHM_INVALID,
            "only RS256",
        ),
        (
            "expired",
            forge(stack, iat=an_hour_ago - 600, exp=an_hour_ago),
            auth.TOKEN_EXPIRED,
            "expired",
        ),
        (
            "not yet valid",
            forge(stack, nbf=int(time.time()) + 3600),
            auth.TOKEN_NOT_YET_VALID,
            "not valid yet",
        ),
        (
            "another issuer",
            forge(stack, iss="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Other"),
            auth.TOKEN_ISSUER_INVALID,
            "another issuer",
        ),
        (
            "another app client",
            forge(stack, client_id="some-other-client"),
            auth.TOKEN_CLIENT_INVALID,
            "app client",
        ),
        (
            "an id token (access tokens only)",
            stack.identity.token(user.name, kind="IdToken"),
            auth.TOKEN_USE_INVALID,
            "token_use",
        ),
        ("no sub", forge(stack, sub=None), auth.TOKEN_MALFORMED, "'sub'"),
    ]
    for label, token, reason, words in cases:
        details = await call_create_author(channel, token)
        assert details.code == UNAUTHENTICATED, f"{label}: {details.code} {details.message}"
        assert details.error_info is not None and details.error_info.reason == reason, label
        assert words in details.message, f"{label}: {details.message!r}"

    # The same checks on a public RPC: a bad credential is refused, not ignored.
    stub: Catalog = catalog_pb2_grpc.CatalogServiceStub(channel)  # type: ignore[assignment]
    await expect_error(
        stub.GetBook(pb.GetBookRequest(id=1), metadata=bearer(forge(stack, key=OWN_KEY))),
        UNAUTHENTICATED,
        "signature",
    )
    await expect_error(
        stub.GetBook(pb.GetBookRequest(id=1), metadata=(("authorization", "Basic dXNlcjpwdw=="),)),
        UNAUTHENTICATED,
        "Bearer <token>",
    )


async def test_a_valid_forged_token_is_accepted_so_the_failures_above_are_the_claims(
    stack: Stack, channel_to: ChannelTo
) -> None:
    stub: Catalog = catalog_pb2_grpc.CatalogServiceStub(channel_to("catalog", forge(stack)))  # type: ignore[assignment]
    created = await stub.CreateAuthor(
        pb.CreateAuthorRequest(author=pb.Author(first_name="Forged", last_name=word())),
        timeout=10,
    )
    assert created.author.id > 0


def served_rpcs(stack: Stack, process: str) -> list[tuple[str, str]]:
    """(service, rpc) of every RPC the process serves, from its reflection (no token)."""
    with grpc.insecure_channel(stack.address(process)) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        return [
            (name, method.name)
            for name in database.get_services()
            for method in pool.FindServiceByName(name).methods
        ]


def test_health_and_reflection_stay_open(stack: Stack) -> None:
    for process in SERVICES:
        assert OPEN <= {service for service, _ in served_rpcs(stack, process)}
        assert stack.health(process) == "SERVING"


async def test_a_flood_of_unknown_keys_fetches_the_jwks_at_most_once(
    stack: Stack, spawn_service: ServiceSpawner, admin_token: str
) -> None:
    process, address = spawn_service("catalog")
    await asyncio.to_thread(wait_for_health, address, "SERVING")
    async with spawn_service.channel(address, None) as channel:
        stub: Catalog = catalog_pb2_grpc.CatalogServiceStub(channel)  # type: ignore[assignment]
        # A valid token first: the keys are fetched once, now.
        await stub.ListBooks(pb.ListBooksRequest(page_size=1), metadata=bearer(admin_token))
        started = time.monotonic()
        for i in range(200):
            forged = forge(stack, key=OWN_KEY, kid=f"rotated-{i}-{secrets.token_hex(4)}")
            await expect_error(
                stub.GetBook(pb.GetBookRequest(id=1), metadata=bearer(forged), timeout=10),
                UNAUTHENTICATED,
                "key the issuer does not publish",
            )
        assert time.monotonic() - started < 60, "the flood must fit in one refetch interval"
    fetches = [line for line in process.log_file.read_text().splitlines() if '"jwks": true' in line]
    assert len(fetches) == 1, fetches


# --- authorization ---------------------------------------------------------------------


def test_every_served_rpc_has_a_policy_entry(stack: Stack) -> None:
    missing = []
    for process in SERVICES:
        tables = policies_of(process)
        missing += [
            f"{process}: {service}/{rpc}"
            for service, rpc in served_rpcs(stack, process)
            if service not in OPEN and rpc not in tables.get(service, {})
        ]
    assert not missing, f"RPCs without an authorization policy entry: {missing}"


def _restricted(roles_missing: set[Role]) -> list[tuple[str, str]]:
    """(process, path) of every RPC that none of `roles_missing`'s holders may call."""
    found = []
    for process in SERVICES:
        for service, policy in policies_of(process).items():
            for name, roles in policy.items():
                if Role.PUBLIC not in roles and not roles & roles_missing:
                    found.append((process, f"/{service}/{name}"))
    return found


async def test_a_shopper_is_refused_on_every_rpc_not_open_to_shoppers(
    stack: Stack, shopper_token: str
) -> None:
    restricted = _restricted({Role.SHOPPER})
    assert "/cloudshelf.catalog.v1.CatalogService/CreateBook" in {p for _, p in restricted}
    for process, path in restricted:
        async with grpc.aio.insecure_channel(stack.address(process)) as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(b"", metadata=bearer(shopper_token), timeout=10)
            details = details_of_error(caught.value)
            assert details.code == PERMISSION_DENIED, f"{path}: {details.message}"
            assert details.error_info is not None
            assert details.error_info.reason == auth.ROLE_REQUIRED, path


async def test_an_anonymous_caller_is_refused_on_every_rpc_that_is_not_public(
    stack: Stack,
) -> None:
    for process, path in _restricted(set()):
        async with grpc.aio.insecure_channel(stack.address(process)) as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(b"", timeout=10)
            details = details_of_error(caught.value)
            assert details.code == UNAUTHENTICATED, f"{path}: {details.message}"
            assert details.error_info is not None
            assert details.error_info.reason == auth.TOKEN_MISSING


async def test_reads_are_public(catalog: Catalog, anonymous_catalog: Catalog) -> None:
    created = (await catalog.CreateBook(pb.CreateBookRequest(book=book()))).book
    shown = await anonymous_catalog.GetBook(pb.GetBookRequest(id=created.id))
    assert shown.book.id == created.id
    await anonymous_catalog.RecordView(pb.RecordViewRequest(book_id=created.id))


class _TwoRpcCatalog(catalog_pb2_grpc.CatalogServiceServicer):
    async def GetBook(
        self, request: pb.GetBookRequest, context: ServicerContext
    ) -> pb.GetBookResponse:
        return pb.GetBookResponse(book=pb.Book(id=request.id))

    async def CreateAuthor(
        self, request: pb.CreateAuthorRequest, context: ServicerContext
    ) -> pb.CreateAuthorResponse:
        return pb.CreateAuthorResponse(author=request.author)


@pytest_asyncio.fixture
async def partial_policy_server(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[grpc.aio.Channel]:
    """The runtime's interceptors on a catalog whose policy lists GetBook only."""
    settings = AuthSettings.from_env(stack.service_env("catalog"))
    full_name = "cloudshelf.catalog.v1.CatalogService"
    with caplog.at_level(logging.WARNING, logger="cloudshelf.auth"):
        interceptor = auth.server_interceptor(settings, [(full_name, {"GetBook": PUBLIC})])
    assert any("CreateAuthor" in r.getMessage() for r in caplog.records), "no start-up warning"
    assert interceptor is not None
    server = grpc.aio.server(interceptors=[interceptor, ServerErrorInterceptor()])
    servicer = _TwoRpcCatalog()  # type: ignore[abstract]
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(0)


async def test_an_rpc_without_a_policy_entry_is_refused(
    partial_policy_server: grpc.aio.Channel, admin_token: str
) -> None:
    stub: Catalog = catalog_pb2_grpc.CatalogServiceStub(partial_policy_server)  # type: ignore[assignment]
    assert (await stub.GetBook(pb.GetBookRequest(id=7))).book.id == 7
    details = await call_create_author(partial_policy_server, admin_token)
    assert details.code == PERMISSION_DENIED
    assert details.error_info is not None and details.error_info.reason == auth.NO_POLICY
    assert "CreateAuthor has no authorization policy" in details.message


def test_a_policy_naming_an_rpc_the_service_lacks_stops_the_start() -> None:
    with pytest.raises(ValueError, match="CreateBok"):
        auth.policies_by_method(
            [("cloudshelf.catalog.v1.CatalogService", {"CreateBok": auth.ADMIN})]
        )


# --- reviews act as the token's user ------------------------------------------------------


async def test_add_review_is_recorded_under_the_tokens_user_whatever_the_body_says(
    catalog: Catalog, catalog_as: CatalogAs, shopper: User
) -> None:
    target = (await catalog.CreateBook(pb.CreateBookRequest(book=book()))).book
    review = (
        await catalog_as(shopper).AddReview(
            pb.AddReviewRequest(
                review=pb.Review(
                    book_id=target.id,
                    user_id="someone-else",
                    rating=5,
                    is_verified_purchase=True,
                )
            )
        )
    ).review
    assert review.user_id == shopper.subject
    assert not review.is_verified_purchase
    listed = await catalog.ListReviews(pb.ListReviewsRequest(book_id=target.id))
    assert [(r.user_id, r.is_verified_purchase) for r in listed.reviews] == [
        (shopper.subject, False)
    ]


async def test_a_shopper_cannot_change_or_delete_another_shoppers_review(
    catalog: Catalog, catalog_as: CatalogAs, reviewers: list[User]
) -> None:
    target = (await catalog.CreateBook(pb.CreateBookRequest(book=book()))).book
    author, other = catalog_as(reviewers[0]), catalog_as(reviewers[1])
    review = (
        await author.AddReview(
            pb.AddReviewRequest(review=pb.Review(book_id=target.id, rating=4, title="mine"))
        )
    ).review
    edit = pb.UpdateReviewRequest(
        review=pb.Review(id=review.id, title="defaced"), update_mask=FieldMask(paths=["title"])
    )
    for refused_call in (
        other.UpdateReview(edit),
        other.DeleteReview(pb.DeleteReviewRequest(review_id=review.id)),
        # An admin moderates, but does not rewrite a shopper's words.
        catalog.UpdateReview(edit),
    ):
        await expect_error(refused_call, PERMISSION_DENIED, "another user's")
    listed = await catalog.ListReviews(pb.ListReviewsRequest(book_id=target.id))
    assert [(r.id, r.title) for r in listed.reviews] == [(review.id, "mine")]

    # Its author may; an admin may delete any review.
    await author.UpdateReview(
        pb.UpdateReviewRequest(
            review=pb.Review(id=review.id, title="edited"), update_mask=FieldMask(paths=["title"])
        )
    )
    await catalog.DeleteReview(pb.DeleteReviewRequest(review_id=review.id))
    assert not (await catalog.ListReviews(pb.ListReviewsRequest(book_id=target.id))).reviews


# --- identity across hops -----------------------------------------------------------------


async def test_a_service_calls_a_peer_as_itself_with_its_own_credentials(
    stack: Stack, anonymous_catalog: Catalog
) -> None:
    """Outside any incoming call (a background job), the runtime's client interceptor
    signs calls with the service's own token: the `service` role, from the pool."""
    settings = stack.settings("storefront")
    credentials = auth.ServiceCredentials(auth.cognito_password_source(settings))
    channel = grpc.aio.insecure_channel(
        stack.address("catalog"), interceptors=[auth.CallerCredentials(credentials)]
    )
    async with channel:
        stub: Catalog = catalog_pb2_grpc.CatalogServiceStub(channel)  # type: ignore[assignment]
        created = await stub.CreateAuthor(
            pb.CreateAuthorRequest(author=pb.Author(first_name="Service", last_name=word())),
            timeout=10,
        )
        assert created.author.id > 0
        # Shoppers' RPCs are not the service's.
        await expect_error(
            stub.AddReview(pb.AddReviewRequest(review=pb.Review(book_id=1, rating=3))),
            PERMISSION_DENIED,
            "shopper",
        )
    assert credentials.fetches == 1
    await expect_error(
        anonymous_catalog.CreateAuthor(
            pb.CreateAuthorRequest(author=pb.Author(first_name="No", last_name=word()))
        ),
        UNAUTHENTICATED,
    )
