"""TLS settings from the environment, and the server's certificate reload on change."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from cloudshelf.runtime.config import Settings, TlsFiles
from cloudshelf.runtime.tls import ReloadingCertificates
from tests.pki import Pki, cert_pem, key_pem


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.create(tmp_path)


def test_plaintext_is_the_default() -> None:
    settings = Settings.from_env("catalog", {})
    assert settings.server_tls is None and settings.peer_tls is None
    assert settings.health_listen_addr is None


def test_the_service_files_serve_both_ways(pki: Pki) -> None:
    settings = Settings.from_env("storefront", pki.server_env())
    files = TlsFiles(str(pki.service.cert_file), str(pki.service.key_file), str(pki.ca_file))
    assert settings.server_tls == files
    assert settings.peer_tls == files


def test_peer_files_override_one_by_one(pki: Pki) -> None:
    settings = Settings.from_env(
        "storefront",
        {**pki.server_env(), "CLOUDSHELF_PEER_TLS_CA_FILE": "/etc/peers/ca.crt"},
    )
    assert settings.peer_tls == TlsFiles(
        str(pki.service.cert_file), str(pki.service.key_file), "/etc/peers/ca.crt"
    )
    # Peers verified against a CA, with no certificate to present: TLS, not mTLS.
    only_ca = Settings.from_env("storefront", {"CLOUDSHELF_PEER_TLS_CA_FILE": "/ca.crt"})
    assert only_ca.server_tls is None
    assert only_ca.peer_tls == TlsFiles(None, None, "/ca.crt")


@pytest.mark.parametrize(
    "environ",
    [
        {"CLOUDSHELF_TLS_CERT_FILE": "/tls.crt"},
        {"CLOUDSHELF_TLS_KEY_FILE": "/tls.key"},
        {"CLOUDSHELF_TLS_CA_FILE": "/ca.crt"},
        {"CLOUDSHELF_PEER_TLS_CERT_FILE": "/tls.crt"},
    ],
)
def test_half_configured_tls_is_refused_at_start(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="go together"):
        Settings.from_env("catalog", environ)


def test_missing_files_fail_at_start_with_their_name(pki: Pki, tmp_path: Path) -> None:
    missing = TlsFiles(str(tmp_path / "gone.crt"), str(pki.service.key_file), None)
    with pytest.raises(OSError, match=r"gone\.crt"):
        ReloadingCertificates(missing)


def test_a_key_of_another_certificate_fails_at_start(pki: Pki) -> None:
    mismatched = TlsFiles(str(pki.service.cert_file), str(pki.client.key_file), None)
    with pytest.raises(ValueError, match="do not form a usable pair"):
        ReloadingCertificates(mismatched)


def replace(path: Path, data: bytes) -> None:
    staged = path.with_suffix(".staged")
    staged.write_bytes(data)
    os.replace(staged, path)


def test_files_are_read_again_only_when_they_change(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    files = TlsFiles(str(pki.service.cert_file), str(pki.service.key_file), str(pki.ca_file))
    certificates = ReloadingCertificates(files)
    assert certificates.mutual
    assert certificates.fetch() is None  # nothing changed

    cert, key = pki.authority.issue("service")
    # Mid-rotation: the new certificate with the old key is kept out, warned about once.
    replace(pki.service.cert_file, cert_pem(cert))
    with caplog.at_level(logging.WARNING, "cloudshelf.tls"):
        assert certificates.fetch() is None
        assert certificates.fetch() is None
    (warning,) = [r for r in caplog.records if r.name == "cloudshelf.tls"]
    assert "do not form a usable pair" in warning.getMessage()

    replace(pki.service.key_file, key_pem(key))
    assert certificates.fetch() is not None
    assert certificates.fetch() is None  # loaded once

    # A file missing for a moment (a volume being updated) keeps the current one.
    pki.ca_file.rename(pki.ca_file.with_suffix(".away"))
    assert certificates.fetch() is None
    pki.ca_file.with_suffix(".away").rename(pki.ca_file)
    assert certificates.fetch() is None  # the same file as before: nothing to load

    # A renewed CA counts as a change too.
    replace(pki.ca_file, pki.ca_file.read_bytes())
    assert certificates.fetch() is not None


def test_tls_without_a_ca_does_not_ask_for_client_certificates(pki: Pki) -> None:
    files = TlsFiles(str(pki.service.cert_file), str(pki.service.key_file), None)
    assert not ReloadingCertificates(files).mutual
