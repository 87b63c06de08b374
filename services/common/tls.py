"""TLS for every gRPC and HTTP hop, from the ``MLOPS_TLS*`` settings, built once per process.

A server holds a :class:`ServerTls` (its certificate and key, and with mutual TLS the CA
its clients' certificates must chain to); a client a :class:`ClientTls` (the CA it trusts,
and with mutual TLS its own certificate). Both read the files named in the settings, so
compose and Kubernetes secrets mount as files and certificates renew without a rebuild:

- gRPC servers take a renewed certificate and key without a restart: grpc asks
  :meth:`ServerTls.grpc_credentials`' fetcher before each handshake, and the fetcher
  re-reads the files when their modification time changed;
- HTTP servers (uvicorn) load the renewed pair into their live ``ssl.SSLContext``
  (:meth:`ServerTls.reload_if_changed`, called by :class:`~services.common.http.HttpServer`
  every ``MLOPS_TLS_RELOAD_SECONDS``), which every later handshake uses;
- clients read the CA when they open a channel; a renewed CA reaches new channels.

Without ``MLOPS_TLS`` everything is plaintext, as before; with it a server refuses
plaintext connections (it listens with TLS only) and a client opens TLS only.

Examples
--------
>>> from services.common.settings import PlatformSettings
>>> client_tls(PlatformSettings()) is None  # MLOPS_TLS unset: plaintext
True
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc

from services.common.logging import get_logger
from services.common.settings import PlatformSettings

log = get_logger(__name__)


class TlsConfigError(ValueError):
    """The TLS settings cannot work: the message names the variable to set or fix."""


def _read(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from None


def _mtime(*paths: Path | None) -> tuple[float, ...]:
    stamps = []
    for path in paths:
        if path is None:
            continue
        try:
            stamps.append(path.stat().st_mtime)
        except OSError:
            stamps.append(-1.0)
    return tuple(stamps)


@dataclass(frozen=True)
class ClientTls:
    """What a client needs to open TLS connections: the CA to verify servers with (the
    system's roots when None) and, for mutual TLS, its own certificate and key."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials for ``grpc.aio.secure_channel`` / ``grpc.secure_channel``."""
        ca = _read(self.ca_file, "MLOPS_TLS_CA_FILE") if self.ca_file else None
        if self.cert_file and self.key_file:
            return grpc.ssl_channel_credentials(
                root_certificates=ca,
                private_key=_read(self.key_file, "MLOPS_TLS_KEY_FILE"),
                certificate_chain=_read(self.cert_file, "MLOPS_TLS_CERT_FILE"),
            )
        return grpc.ssl_channel_credentials(root_certificates=ca)

    def ssl_context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` for HTTP clients (``httpx.AsyncClient(verify=...)``): the
        server's certificate and host name are verified."""
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.cert_file and self.key_file:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


class ServerTls:
    """A server's certificate and key, and with ``client_ca`` the CA every client's
    certificate must chain to (mutual TLS; gRPC requires one, HTTP verifies one when
    presented, so health probes that cannot present one still get in)."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca: Path | None = None):
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca = client_ca
        self._lock = threading.Lock()
        self._pair = self._load()
        self._stamp = _mtime(cert_file, key_file)
        self._contexts: list[ssl.SSLContext] = []
        self._contexts_stamp = self._stamp

    def _load(self) -> tuple[bytes, bytes]:
        pair = _read(self.cert_file, "MLOPS_TLS_CERT_FILE"), _read(self.key_file, "MLOPS_TLS_KEY_FILE")
        try:  # a mismatched or malformed pair fails here, at start-up, naming the files
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert_file, self.key_file)
        except ssl.SSLError as exc:
            raise TlsConfigError(
                f"MLOPS_TLS_CERT_FILE/MLOPS_TLS_KEY_FILE: {self.cert_file} and {self.key_file} "
                f"are not a certificate and its key: {exc.reason}"
            ) from None
        return pair

    def _current(self) -> tuple[float, ...]:
        """The files' stamp, re-reading them when they changed since they were read (a pair
        caught half-written is retried at the next look, the old one kept meanwhile). gRPC
        and HTTP servers sharing this object each compare the stamp with the one they serve."""
        stamp = _mtime(self.cert_file, self.key_file)
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._pair = self._load()
                except TlsConfigError as exc:
                    log.warning("tls_reload_failed", error=str(exc))
                    return self._stamp
                self._stamp = stamp
                log.info("tls_certificate_reloaded", cert_file=str(self.cert_file))
            return self._stamp

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        ca = _read(self.client_ca, "MLOPS_TLS_CA_FILE") if self.client_ca else None
        cert, key = self._pair
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Credentials whose certificate follows the files: grpc calls the fetcher before
        each handshake, and it answers a new configuration only when they changed."""

        served = self._stamp

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            nonlocal served
            current = self._current()
            if current == served:
                return None
            served = current
            return self._configuration()

        # grpc documents None as "keep the current configuration"; its type stub omits it.
        fetching = cast("Callable[[], grpc.ServerCertificateConfiguration]", fetch)
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), fetching, require_client_authentication=self.client_ca is not None
        )

    def ssl_context(self) -> ssl.SSLContext:
        """A server-side context for uvicorn, reloaded in place by :meth:`reload_if_changed`."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca is not None:
            context.load_verify_locations(cafile=str(self.client_ca))
            context.verify_mode = ssl.CERT_OPTIONAL
        self._contexts.append(context)
        return context

    def reload_if_changed(self) -> bool:
        """Load renewed files into every context :meth:`ssl_context` made; True if it did."""
        current = self._current()
        if current == self._contexts_stamp:
            return False
        for context in self._contexts:
            context.load_cert_chain(self.cert_file, self.key_file)
        self._contexts_stamp = current
        return True


def sync_channel(address: str, tls: ClientTls | None) -> grpc.Channel:
    """A blocking channel to ``address`` (the CLI's), TLS with ``tls`` and plaintext without."""
    if tls is not None:
        return grpc.secure_channel(address, tls.grpc_credentials())
    return grpc.insecure_channel(address)


def server_tls(settings: PlatformSettings) -> ServerTls | None:
    """The server side of ``settings`` (None without ``MLOPS_TLS``): raises
    :class:`TlsConfigError` naming the variable when a file is missing or unreadable."""
    if not settings.tls_enabled:
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise TlsConfigError("MLOPS_TLS_CERT_FILE and MLOPS_TLS_KEY_FILE are required with MLOPS_TLS")
    if settings.tls_client_auth and settings.tls_ca_file is None:
        raise TlsConfigError("MLOPS_TLS_CA_FILE is required with MLOPS_TLS_CLIENT_AUTH")
    return ServerTls(
        settings.tls_cert_file,
        settings.tls_key_file,
        settings.tls_ca_file if settings.tls_client_auth else None,
    )


def client_tls(settings: PlatformSettings) -> ClientTls | None:
    """The client side of ``settings`` (None without ``MLOPS_TLS``). With mutual TLS a
    client presents the component's own certificate."""
    if not settings.tls_enabled:
        return None
    mutual = settings.tls_client_auth
    return ClientTls(
        ca_file=settings.tls_ca_file,
        cert_file=settings.tls_cert_file if mutual else None,
        key_file=settings.tls_key_file if mutual else None,
    )
