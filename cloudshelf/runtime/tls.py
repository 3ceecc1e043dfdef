"""Transport security from PEM files (config.TlsFiles): server credentials that reload
their files when they change, and the channel credentials of peer channels.

Server side: grpc asks `ReloadingCertificates.fetch` before every new connection's
handshake; it compares the files' stat signatures (inode, size, mtime) with those it last
loaded and re-reads them only when one changed, so a renewed certificate (cert-manager
rewriting a mounted Secret) is served to the next connection, without a restart, and
connections already open keep theirs. Client side (peer channels): grpc has no reloading
channel credentials, so the files are read when the channel is made, at start-up: a
renewed client certificate or CA is used after a restart.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path

import grpc

from cloudshelf.runtime.config import TlsFiles

log = logging.getLogger("cloudshelf.tls")

_Signature = tuple[int, int, int] | None


def _signature(path: str) -> _Signature:
    try:
        stat = os.stat(path)  # follows symlinks: a Secret volume swaps its ..data link
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _NO_PASSWORD() -> bytes:
    # An encrypted key fails instead of prompting on a terminal (grpc reads no passphrase).
    return b""


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read the {what} file {path}: {exc.strerror}") from exc


class ReloadingCertificates:
    """The certificate configuration of a TLS server port, re-read when its files change."""

    def __init__(self, files: TlsFiles) -> None:
        if files.cert_file is None or files.key_file is None:
            raise ValueError("a TLS server needs a certificate and a key file")
        self.cert_file = files.cert_file
        self.key_file = files.key_file
        self.ca_file = files.ca_file
        self._lock = threading.Lock()  # grpc calls fetch from its own threads
        self._loaded = self._signatures()
        self._refused: list[_Signature] | None = None
        self.initial = self._configuration()

    @property
    def mutual(self) -> bool:
        return self.ca_file is not None

    def _paths(self) -> list[str]:
        return [p for p in (self.cert_file, self.key_file, self.ca_file) if p is not None]

    def _signatures(self) -> list[_Signature]:
        return [_signature(path) for path in self._paths()]

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        cert = _read(self.cert_file, "TLS certificate")
        key = _read(self.key_file, "TLS key")
        ca = None if self.ca_file is None else _read(self.ca_file, "TLS CA")
        try:
            # A pair caught mid-rotation (new certificate, old key) is refused here, with a
            # readable reason, instead of failing every handshake.
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                self.cert_file, self.key_file, password=_NO_PASSWORD
            )
        except ssl.SSLError as exc:
            raise ValueError(
                f"the TLS certificate {self.cert_file} and key {self.key_file} "
                f"do not form a usable pair: {exc}"
            ) from exc
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when a file changed since the last load; None (keep the
        current one) when none did, or when a file is missing or unreadable mid-update."""
        with self._lock:
            current = self._signatures()
            if current in (self._loaded, self._refused) or None in current:
                return None
            try:
                configuration = self._configuration()
            except (OSError, ValueError) as exc:
                self._refused = current  # warned once per change, not once per connection
                log.warning("TLS files changed but are not usable, keeping the old: %s", exc)
                return None
            self._loaded = current
            log.info("TLS certificate files changed: serving the new ones")
            return configuration

    def server_credentials(self) -> grpc.ServerCredentials:
        # grpc's fetcher may return None ("no change"); types-grpcio's stub omits it.
        return grpc.dynamic_ssl_server_credentials(
            self.initial,
            self.fetch,  # type: ignore[arg-type]
            require_client_authentication=self.mutual,
        )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """What a peer channel presents (its certificate, when set) and trusts (the CA, or the
    system's roots when unset)."""
    ca = None if files.ca_file is None else _read(files.ca_file, "peer TLS CA")
    key = None if files.key_file is None else _read(files.key_file, "peer TLS key")
    cert = None if files.cert_file is None else _read(files.cert_file, "peer TLS certificate")
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
