"""Count the statements a server sends to PostgreSQL: a TCP proxy that reads the protocol.

    proxy = CountingProxy("127.0.0.1", 5432)
    port = proxy.start()          # listens on 127.0.0.1:<port>, serves from its own thread
    before = proxy.counts()
    ...                           # point the server's DATABASE_URL at the port, send requests
    spent = proxy.counts() - before
    proxy.stop()

pg_stat_statements is not loaded on the shared PostgreSQL (it needs a restart to load), so
bench/run.py puts this proxy between a dedicated, short-lived `tenantry serve` and the
database and reads the frontend (client → server) side of the protocol:

- the first message of a connection is untyped (`int32 length, int32 code`): an
  SSLRequest or GSSENCRequest, which the proxy answers `N` itself (plain TCP on the
  loopback; the client then sends its StartupMessage), a CancelRequest, or the
  StartupMessage, after which every message is `byte type, int32 length, body`;
- a statement is an `E` (Execute) of the extended protocol, or one SQL statement of a
  `Q` (simple query; `BEGIN; SELECT ...` in one `Q` is two statements);
- a round trip is a `Q`, an `S` (Sync) or an `H` (Flush, which asyncpg sends after the
  Parse/Describe of a statement it prepares): the client waits for the server after each.

The server's answers are relayed unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from dataclasses import dataclass

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
MAX_UNTYPED = 10_000  # a StartupMessage is a few hundred bytes


class ProtocolError(Exception):
    """Bytes that are not the PostgreSQL frontend protocol."""


@dataclass(frozen=True)
class Message:
    """One frontend message: `kind` is its type byte, or ssl/gssenc/cancel/startup."""

    kind: str
    body: bytes
    raw: bytes


@dataclass(frozen=True)
class Counts:
    statements: int = 0
    round_trips: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.statements + other.statements, self.round_trips + other.round_trips)

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.statements - other.statements, self.round_trips - other.round_trips)


class FrontendParser:
    """Splits one connection's client → server bytes into messages, whatever the chunking."""

    def __init__(self) -> None:
        self.buffer = b""
        self.started = False

    def feed(self, data: bytes) -> list[Message]:
        self.buffer += data
        messages = []
        while (message := self._next()) is not None:
            messages.append(message)
        return messages

    def _next(self) -> Message | None:
        if not self.started:
            return self._untyped()
        if len(self.buffer) < 5:
            return None
        (length,) = struct.unpack_from("!i", self.buffer, 1)
        if length < 4:
            raise ProtocolError(f"message length {length}")
        if len(self.buffer) < 1 + length:
            return None
        raw, self.buffer = self.buffer[: 1 + length], self.buffer[1 + length :]
        return Message(chr(raw[0]), raw[5:], raw)

    def _untyped(self) -> Message | None:
        if len(self.buffer) < 8:
            return None
        length, code = struct.unpack_from("!ii", self.buffer)
        if not 8 <= length <= MAX_UNTYPED:
            raise ProtocolError(f"untyped message length {length}")
        if len(self.buffer) < length:
            return None
        raw, self.buffer = self.buffer[:length], self.buffer[length:]
        kind = {SSL_REQUEST: "ssl", GSSENC_REQUEST: "gssenc", CANCEL_REQUEST: "cancel"}.get(
            code, "startup"
        )
        # SSL/GSS negotiation is followed by another untyped message; the others are not.
        self.started = kind == "startup"
        return Message(kind, raw[8:], raw)


def count_sql_statements(sql: str) -> int:
    """Non-empty statements in a simple-query string: `;` outside quotes and comments.

    Handles '...', "...", $tag$...$tag$, -- and /* */ comments: enough for what a driver
    or an application sends (not a full SQL lexer).
    """
    count, pending, i, n = 0, False, 0, len(sql)
    while i < n:
        c = sql[i]
        if c == ";":
            count, pending = count + pending, False
            i += 1
        elif c.isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            pending = True
            i = _skip_token(sql, i)
    return count + pending


def _skip_token(sql: str, i: int) -> int:
    """Index after the quoted string or the single character at `i`."""
    c = sql[i]
    if c in "'\"":
        end = i + 1
        while True:
            end = sql.find(c, end)
            if end < 0:
                return len(sql)
            if sql.startswith(c * 2, end):  # doubled quote: still inside
                end += 2
                continue
            return end + 1
    if c == "$":
        close = sql.find("$", i + 1)
        tag = sql[i : close + 1] if close > 0 else ""
        if tag and (tag == "$$" or tag[1:-1].replace("_", "a").isalnum()):
            end = sql.find(tag, close + 1)
            return len(sql) if end < 0 else end + len(tag)
    return i + 1


def counts_of(messages: list[Message]) -> Counts:
    statements = round_trips = 0
    for message in messages:
        if message.kind == "Q":
            query = message.body.split(b"\0", 1)[0].decode("utf-8", "replace")
            statements += count_sql_statements(query)
            round_trips += 1
        elif message.kind == "E":
            statements += 1
        elif message.kind in ("S", "H"):
            round_trips += 1
    return Counts(statements, round_trips)


class CountingProxy:
    """The proxy on 127.0.0.1, run by an event loop of its own in a daemon thread.

    bench/run.py drives wrk with blocking calls; a thread keeps the relay independent of
    them. `counts()` is read from the bench's thread (one tuple assignment, under the GIL).
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._counts = Counts()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> int:
        """Listen on a free port of 127.0.0.1; that port."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        return future.result(timeout=10)

    def counts(self) -> Counts:
        with self._lock:
            return self._counts

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    def _add(self, counts: Counts) -> None:
        with self._lock:
            self._counts = self._counts + counts

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        try:
            server_in, server_out = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_out.close()
            return
        back = asyncio.ensure_future(_pipe(server_in, client_out))
        try:
            await self._forward(client_in, client_out, server_out)
        except (OSError, ProtocolError):
            pass
        finally:
            server_out.close()
            await asyncio.gather(back, return_exceptions=True)
            client_out.close()

    async def _forward(
        self,
        client_in: asyncio.StreamReader,
        client_out: asyncio.StreamWriter,
        server_out: asyncio.StreamWriter,
    ) -> None:
        parser = FrontendParser()
        while data := await client_in.read(65536):
            messages = parser.feed(data)
            for message in messages:
                if message.kind in ("ssl", "gssenc"):
                    client_out.write(b"N")  # no encryption on the loopback: go on in plain
                else:
                    server_out.write(message.raw)
            self._add(counts_of(messages))
            await server_out.drain()
            await client_out.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()
