"""A TCP proxy a test controls: the network between a service and its broker or database.

:meth:`TcpProxy.cut` drops every open connection and black-holes new ones (accepted, never
answered, as a dead link looks to a client: no refusal to react to); :meth:`TcpProxy.mend`
lets connections through again. It runs its own event loop in a thread, so a test's loop
(and the service under test in it) sees a network, not a cooperating coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from services.common.localstack import free_port


class TcpProxy:
    """Listens on a free loopback port (``port``) and forwards to ``target_port``."""

    def __init__(self, target_port: int, host: str = "127.0.0.1"):
        self.host = host
        self.port = free_port()
        self._target = target_port
        self._loop = asyncio.new_event_loop()
        self._cut = False
        self._connections: set[asyncio.StreamWriter] = set()
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

    def cut(self) -> None:
        """Drop every connection through the proxy and answer none from now on."""
        asyncio.run_coroutine_threadsafe(self._set_cut(True), self._loop).result(10)

    def mend(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set_cut(False), self._loop).result(10)

    async def _set_cut(self, cut: bool) -> None:
        # Either way every connection open now ends: at a cut the link dies under them; at a
        # mend the ones held silent are reset, as a client's half-open sockets are once the
        # link is back, and it reconnects through the mended link.
        self._cut = cut
        for writer in list(self._connections):
            writer.transport.abort()
        self._connections.clear()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, self.host, self.port))
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._cut:
            self._connections.add(client_writer)  # held open and silent until mended or cut again
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(self.host, self._target)
        except OSError:
            client_writer.transport.abort()
            return
        self._connections.update((client_writer, server_writer))
        await asyncio.gather(
            self._pipe(client_reader, server_writer),
            self._pipe(server_reader, client_writer),
            return_exceptions=True,
        )
        for writer in (client_writer, server_writer):
            self._connections.discard(writer)
            writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
