"""Transport security by configuration: a catalog serving mTLS refuses clients without a
certificate of the mesh's CA, peers reach each other over mTLS, health stays reachable by
the kubelet's plaintext probes, and a renewed certificate is served without a restart."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.devstack.components import free_port
from cloudshelf.runtime.config import Settings, TlsFiles
from cloudshelf.runtime.rpc import peer_channel
from tests.conftest import ServiceSpawner, expect_error, wait_for_health
from tests.pki import Identity, Pki, cert_pem, key_pem

pytestmark = pytest.mark.integration


def credentials(pki: Pki, identity: Identity | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca_file.read_bytes(),
        private_key=None if identity is None else identity.key_bytes(),
        certificate_chain=None if identity is None else identity.cert_bytes(),
    )


async def list_categories(channel: grpc.aio.Channel) -> catalog_pb2.ListCategoriesResponse:
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    response: catalog_pb2.ListCategoriesResponse = await stub.ListCategories(
        catalog_pb2.ListCategoriesRequest(), timeout=5
    )
    return response


async def spawn_mtls(
    spawn_service: ServiceSpawner, service: str, pki: Pki, **overrides: str
) -> tuple[str, str]:
    """(address, plaintext health address) of a service serving mTLS, once it serves."""
    health_address = f"127.0.0.1:{free_port()}"
    _, address = spawn_service(
        service, **pki.server_env(), CLOUDSHELF_HEALTH_LISTEN_ADDR=health_address, **overrides
    )
    await asyncio.to_thread(wait_for_health, health_address, "SERVING")
    return address, health_address


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.create(tmp_path / "pki")


async def test_mtls_refuses_clients_without_a_certificate_of_the_mesh(
    spawn_service: ServiceSpawner, pki: Pki
) -> None:
    address, health_address = await spawn_mtls(spawn_service, "catalog", pki)

    async with grpc.aio.secure_channel(address, credentials(pki, pki.client)) as channel:
        await list_categories(channel)
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

    # TLS without a client certificate, a certificate of another CA, and plaintext.
    for refused in (
        grpc.aio.secure_channel(address, credentials(pki, None)),
        grpc.aio.secure_channel(address, credentials(pki, pki.stranger)),
        grpc.aio.insecure_channel(address),
    ):
        async with refused as channel:
            await expect_error(list_categories(channel), grpc.StatusCode.UNAVAILABLE)

    # The plaintext port for the probes serves health and nothing else.
    async with grpc.aio.insecure_channel(health_address) as channel:
        await expect_error(list_categories(channel), grpc.StatusCode.UNIMPLEMENTED)


async def test_peer_channels_speak_mtls_with_the_configured_files(
    spawn_service: ServiceSpawner, pki: Pki
) -> None:
    address, _ = await spawn_mtls(spawn_service, "catalog", pki)
    # A separate client identity for peer calls, the CA shared with the server side.
    settings = Settings.from_env(
        "storefront",
        {
            **pki.server_env(),
            "CLOUDSHELF_PEER_TLS_CERT_FILE": str(pki.client.cert_file),
            "CLOUDSHELF_PEER_TLS_KEY_FILE": str(pki.client.key_file),
        },
    )
    assert settings.peer_tls == TlsFiles(
        str(pki.client.cert_file), str(pki.client.key_file), str(pki.ca_file)
    )
    channel = peer_channel(address, 5.0, tls=settings.peer_tls)
    try:
        await list_categories(channel)
    finally:
        await channel.close()

    # Trusting the CA is not enough: the peer must present a certificate.
    certless = peer_channel(address, 5.0, tls=TlsFiles(None, None, str(pki.ca_file)))
    try:
        await expect_error(list_categories(certless), grpc.StatusCode.UNAVAILABLE)
    finally:
        await certless.close()


async def test_the_storefront_reaches_its_peers_over_mtls(
    spawn_service: ServiceSpawner, pki: Pki
) -> None:
    catalog, _ = await spawn_mtls(spawn_service, "catalog", pki)
    cart, _ = await spawn_mtls(spawn_service, "cart", pki)
    peers = {"CLOUDSHELF_CATALOG_ADDR": catalog, "CLOUDSHELF_CART_ADDR": cart}
    # Its dependency checks are health calls over its peer channels.
    _, storefront_health = await spawn_mtls(spawn_service, "storefront", pki, **peers)
    for dependency in ("dependency/catalog", "dependency/cart"):
        await asyncio.to_thread(wait_for_health, storefront_health, "SERVING", dependency)

    # The same storefront without certificates cannot reach them.
    plaintext_health = f"127.0.0.1:{free_port()}"
    spawn_service("storefront", CLOUDSHELF_HEALTH_LISTEN_ADDR=plaintext_health, **peers)
    await asyncio.to_thread(wait_for_health, plaintext_health, "NOT_SERVING", "dependency/catalog")
    await asyncio.to_thread(wait_for_health, plaintext_health, "NOT_SERVING", "dependency/cart")


def served_certificate(address: str, pki: Pki) -> bytes:
    """The DER certificate the server presents to a new connection."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    context.load_cert_chain(pki.client.cert_file, pki.client.key_file)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


async def test_a_renewed_certificate_is_served_without_a_restart(
    spawn_service: ServiceSpawner, pki: Pki
) -> None:
    address, _ = await spawn_mtls(spawn_service, "catalog", pki)
    first = await asyncio.to_thread(served_certificate, address, pki)
    assert first == x509.load_pem_x509_certificate(pki.service.cert_bytes()).public_bytes(
        Encoding.DER
    )
    async with grpc.aio.secure_channel(address, credentials(pki, pki.client)) as open_channel:
        await list_categories(open_channel)

        renewed, key = pki.authority.issue("service")
        # As a Secret volume does: new files swapped in by a rename.
        for path, data in ((pki.service.key_file, key_pem(key)), (pki.service.cert_file, None)):
            staged = path.with_suffix(".new")
            staged.write_bytes(cert_pem(renewed) if data is None else data)
            os.replace(staged, path)
        expected = renewed.public_bytes(Encoding.DER)

        served = await asyncio.to_thread(served_certificate, address, pki)
        assert served == expected != first
        # Connections opened before the renewal keep working.
        await list_categories(open_channel)
    async with grpc.aio.secure_channel(address, credentials(pki, pki.client)) as channel:
        await list_categories(channel)
