"""An optional webhook told about every drift event, refusing targets it must not reach.

A webhook URL is configuration, but the monitor posts to it from inside the platform's
network, so a careless or hostile value could make it reach internal services (cloud
metadata at 169.254.169.254, a database on 10.x, the monitor's own host). The URL must use
an allowed scheme and its host must resolve only to public addresses, checked at start-up
and again before every delivery (a DNS answer can change). Redirects are not followed.
Delivery never slows the monitor: alerts wait in a bounded queue, and the oldest is
dropped (and counted) if the target cannot keep up.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx

from services.common.logging import get_logger
from services.monitor import metrics

log = get_logger(__name__)

Resolver = Callable[[str, int], Iterable[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to."""
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


def _port(scheme: str, port: int | None) -> int:
    return port or (443 if scheme == "https" else 80)


def check_url_syntax(url: str, schemes: Iterable[str]) -> None:
    """Refuse a URL that is malformed or uses a scheme not allowed, without any lookup.

    >>> check_url_syntax("ftp://alerts.example.com/x", ["https"])
    Traceback (most recent call last):
    ...
    ValueError: alert_webhook_url: scheme 'ftp' is not allowed (allowed: https)
    """
    allowed = sorted({s.lower() for s in schemes})
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError as exc:
        raise ValueError(f"alert_webhook_url: not a URL: {exc}") from None
    if parts.scheme.lower() not in allowed:
        raise ValueError(
            f"alert_webhook_url: scheme {parts.scheme!r} is not allowed (allowed: {', '.join(allowed)})"
        )
    if not parts.hostname:
        raise ValueError("alert_webhook_url: no host")
    if parts.username or parts.password:
        raise ValueError("alert_webhook_url: credentials in the URL are not allowed; use a token in the path")


def check_target(
    url: str, schemes: Iterable[str], *, allow_private: bool, resolver: Resolver = resolve
) -> None:
    """Refuse a URL whose host is, or resolves to, an address inside a private network.

    >>> check_target("https://169.254.169.254/latest", ["https"], allow_private=False)
    Traceback (most recent call last):
    ...
    ValueError: alert_webhook_url: 169.254.169.254 is a link-local address
    """
    check_url_syntax(url, schemes)
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        addresses = [host] if _is_ip(host) else list(resolver(host, _port(parts.scheme, parts.port)))
    except OSError as exc:
        raise ValueError(f"alert_webhook_url: cannot resolve {host!r}: {exc}") from None
    if not addresses:
        raise ValueError(f"alert_webhook_url: {host!r} resolves to no address")
    if allow_private:
        return
    for address in addresses:
        problem = _non_public(ipaddress.ip_address(address))
        if problem:
            shown = address if address == host else f"{host!r} resolves to {address}, which"
            raise ValueError(f"alert_webhook_url: {shown} is {problem}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _non_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _non_public(address.ipv4_mapped)
    for test, what in (
        (address.is_loopback, "a loopback address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
    ):
        if test:
            return what
    return ""


class WebhookAlerter:
    """Posts each alert (a JSON object) to the webhook, in the background.

    Parameters
    ----------
    url, schemes, allow_private
        The target and what it may be (see :func:`check_target`).
    capacity
        Alerts waiting at most; beyond it the oldest is dropped.
    """

    def __init__(
        self,
        url: str,
        schemes: Iterable[str],
        *,
        allow_private: bool = False,
        capacity: int = 1000,
        timeout: float = 5.0,
        attempts: int = 3,
        resolver: Resolver = resolve,
    ):
        self._url = url
        self._schemes = list(schemes)
        self._allow_private = allow_private
        self._resolver = resolver
        self._queue: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self._wakeup = asyncio.Event()
        self._timeout = timeout
        self._attempts = attempts
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.delivered = 0

    async def start(self) -> None:
        """Check the target (refusing to start on a forbidden one) and start delivering."""
        await asyncio.to_thread(self._check)
        self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        self._task = asyncio.create_task(self._deliver(), name="alert-webhook")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def offer(self, alert: dict[str, Any]) -> None:
        """Queue an alert; never blocks, never raises."""
        if len(self._queue) == self._queue.maxlen:
            metrics.ALERTS.labels("dropped").inc()
        self._queue.append(alert)
        self._wakeup.set()

    def _check(self) -> None:
        check_target(self._url, self._schemes, allow_private=self._allow_private, resolver=self._resolver)

    async def _deliver(self) -> None:
        assert self._client is not None
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            alert = self._queue.popleft()
            outcome = await self._post(alert)
            metrics.ALERTS.labels(outcome).inc()
            if outcome == "delivered":
                self.delivered += 1

    async def _post(self, alert: dict[str, Any]) -> str:
        assert self._client is not None
        for attempt in range(self._attempts):
            try:
                await asyncio.to_thread(self._check)
            except ValueError as exc:
                log.warning("alert_refused", error=str(exc))
                return "refused"
            try:
                response = await self._client.post(self._url, json=alert)
            except httpx.HTTPError as exc:
                log.warning("alert_failed", attempt=attempt + 1, error=type(exc).__name__)
            else:
                if response.is_success:
                    return "delivered"
                log.warning("alert_rejected", attempt=attempt + 1, status=response.status_code)
                if response.status_code < 500 and response.status_code != 429:
                    return "rejected"
            await asyncio.sleep(0.5 * 2**attempt)
        return "failed"
