"""A TCP proxy a test controls: the network between a service and its broker or database.

:meth:`TcpProxy.cut` drops every open connection and black-holes new ones (accepted, never
answered, as a dead link looks to a client: no refusal to react to); :meth:`TcpProxy.mend`
lets connections through again. It runs its own event loop in a thread, so a test's loop
(and the service under test in it) sees a network, not a cooperating coroutine.

A cut can spare some clients, told apart by the first bytes each sends (its ``hello``):
Kafka clients all reach a broker at the one address it advertises, so a test cutting a
service off from its broker spares its own producer by Kafka client id (see
:func:`kafka_client_id`), as a network cut between one host and the broker would.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Callable

from services.common.localstack import free_port

Sparing = Callable[[bytes], bool]
"""Whether a cut spares a connection, from the first bytes its client sent."""


def kafka_client_id(hello: bytes) -> str | None:
    """The client id in a Kafka request (``hello``: the first bytes of a connection), None
    when they are not one: size (int32), api key and version (int16), correlation id (int32),
    then the client id as an int16-length string."""
    if len(hello) < 14:
        return None
    (length,) = struct.unpack_from(">h", hello, 12)
    name = hello[14 : 14 + length] if length >= 0 else b""
    return name.decode(errors="replace") if len(name) == length else None


def never(hello: bytes) -> bool:
    return False


class TcpProxy:
    """Listens on a free loopback port (``port``) and forwards to ``target_port``."""

    def __init__(self, target_port: int, host: str = "127.0.0.1"):
        self.host = host
        self.port = free_port()
        self._target = target_port
        self._loop = asyncio.new_event_loop()
        self._cut = False
        self._sparing: Sparing = never
        # Each open connection's two ends, under the first bytes its client sent.
        self._connections: dict[tuple[asyncio.StreamWriter, ...], bytes] = {}
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"proxy:{self.port}", daemon=True)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _close(self) -> None:
        self._server.close()
        await self._set_cut(True)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def cut(self, sparing: Sparing = never) -> None:
        """Drop every connection through the proxy and answer none from now on, except those
        whose client's first bytes ``sparing`` accepts."""
        asyncio.run_coroutine_threadsafe(self._set_cut(True, sparing), self._loop).result(10)

    def mend(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set_cut(False), self._loop).result(10)

    async def _set_cut(self, cut: bool, sparing: Sparing = never) -> None:
        # Either way every connection open now ends, but those spared: at a cut the link dies
        # under them; at a mend the ones held silent are reset, as a client's half-open
        # sockets are once the link is back, and it reconnects through the mended link.
        self._cut, self._sparing = cut, sparing
        for ends, hello in list(self._connections.items()):
            if cut and sparing(hello):
                continue
            for writer in ends:
                writer.transport.abort()
            del self._connections[ends]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, self.host, self.port))
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        # The clients proxied here speak first (Kafka, MongoDB): their first bytes name them.
        hello = b""
        with contextlib.suppress(ConnectionError):
            hello = await client_reader.read(65536)
        if not hello:
            client_writer.transport.abort()
            return
        if self._cut and not self._sparing(hello):
            self._connections[(client_writer,)] = hello  # held silent until mended or cut again
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(self.host, self._target)
        except OSError:
            client_writer.transport.abort()
            return
        ends = (client_writer, server_writer)
        self._connections[ends] = hello
        server_writer.write(hello)
        await asyncio.gather(
            self._pipe(client_reader, server_writer),
            self._pipe(server_reader, client_writer),
            return_exceptions=True,
        )
        self._connections.pop(ends, None)
        for writer in ends:
            writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
