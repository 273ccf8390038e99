"""The data plane of one proxied connection: two streams, each on the kernel's fast path or
through its toxic pipeline, switching live as toxics come and go.

Fast path (no toxic on the stream): the bytes never enter Python. When the source socket is
readable they are spliced into a pipe and from the pipe into the destination socket
(``os.splice``, non-blocking). The pipe is borrowed from a small pool and given back as soon
as it is empty, so an idle connection holds no pipe: only its two sockets and two small
objects. When the destination is full, the stream stops reading and waits for room, which
is TCP's own back-pressure, end to end.

Toxic path: the stream's reader puts chunks into a ``Pipeline`` and a writer task takes them
off its tail. Adding the first toxic moves a live stream onto this path (after whatever its
pipe still held); removing the last one lets the writer drain the pipeline, then the stream
goes back to splicing. No byte is lost or reordered by the switch.

How a stream's end closes the connection is ``connection.Connection``'s business.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import socket
import time
from typing import TYPE_CHECKING, Any

from harness.proxy.pipeline import END, Chunk, End, Pipeline

if TYPE_CHECKING:
    from harness.proxy.connection import Connection

SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20      # bytes one splice may move; the pipe is sized to match
READ_SIZE = 32 * 1024    # the toxic path reads as Go's io.Copy does
SPLICES_PER_WAKEUP = 16  # then let other connections have the loop
FAST, TOXIC, DRAIN, DONE = "fast", "toxic", "drain", "done"


class PipePool:
    """Empty pipes to splice through, reused; only streams with bytes in flight hold one."""

    def __init__(self, size: int = PIPE_SIZE, max_idle: int = 32) -> None:
        self.size = size
        self.max_idle = max_idle
        self.idle: list[tuple[int, int]] = []

    def take(self) -> tuple[int, int]:
        """An empty pipe (read end, write end)."""
        try:
            return self.idle.pop()
        except IndexError:
            pass
        read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(write, F_SETPIPE_SZ, self.size)
        return read, write

    def give(self, pipe: tuple[int, int]) -> None:
        """Return an empty pipe."""
        if len(self.idle) < self.max_idle:
            self.idle.append(pipe)
        else:
            self.discard(pipe)

    @staticmethod
    def discard(pipe: tuple[int, int]) -> None:
        """Close a pipe that still holds bytes nobody will read."""
        for fd in pipe:
            with contextlib.suppress(OSError):
                os.close(fd)


PIPES = PipePool()


class Spinner:
    """Keeps the loop polling, instead of sleeping, for ``window_s`` after traffic.

    A request through the proxy costs two wake-ups of the proxy (request, then answer), and
    on a virtual machine a wake-up on another CPU costs more than the proxy's own work. After
    forwarding, the answer usually comes within tens of microseconds; polling that long
    catches it without sleeping, as Go's scheduler spins before parking. Idle connections
    cost nothing: there is no spinning without traffic. ``window_s`` 0 turns it off.
    """

    __slots__ = ("loop", "window_s", "last", "active")

    def __init__(self, loop: asyncio.AbstractEventLoop, window_s: float) -> None:
        self.loop = loop
        self.window_s = window_s
        self.last = 0.0
        self.active = False

    def kick(self) -> None:
        """Traffic just passed: poll for another window."""
        if self.window_s > 0:
            self.last = time.perf_counter()
            if not self.active:
                self.active = True
                self.loop.call_soon(self._spin)

    def _spin(self) -> None:
        if time.perf_counter() - self.last < self.window_s:
            self.loop.call_soon(self._spin)
        else:
            self.active = False


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Stream:
    """One direction of a connection: ``src`` to ``dst``."""

    __slots__ = ("conn", "loop", "src", "dst", "src_fd", "dst_fd", "mode", "pipe", "pending",
                 "pipeline", "writer", "writer_idle", "reading", "writing", "src_done", "bytes")

    def __init__(self, conn: Connection, src: socket.socket, dst: socket.socket) -> None:
        self.conn = conn
        self.loop = conn.loop
        self.src, self.dst = src, dst
        self.src_fd, self.dst_fd = src.fileno(), dst.fileno()
        self.mode = FAST
        self.pipe: tuple[int, int] | None = None
        self.pending = 0
        self.pipeline: Pipeline | None = None
        self.writer: asyncio.Task[None] | None = None
        self.writer_idle = False
        self.reading = False
        self.writing = False
        self.src_done = False
        self.bytes = 0

    # Fast path -------------------------------------------------------------------------

    def start_fast(self) -> None:
        """Begin splicing."""
        self.mode = FAST
        if not self.src_done and not self.reading:
            self.reading = True
            self.loop.add_reader(self.src_fd, self._fast_readable)

    def _fast_readable(self) -> None:
        pipe = self.pipe
        if pipe is None:
            pipe = self.pipe = PIPES.take()
        for _ in range(SPLICES_PER_WAKEUP):
            try:
                moved = os.splice(self.src_fd, pipe[1], PIPE_SIZE, flags=SPLICE_FLAGS)
            except BlockingIOError:
                break
            except OSError:
                moved = 0
            if moved == 0:
                self._release_pipe()
                self._source_ended()
                return
            self.pending += moved
            if not self._flush():
                return
            if moved < PIPE_SIZE:
                break
        self._release_pipe()
        self.conn.spinner.kick()

    def _flush(self) -> bool:
        """Splice the pipe into ``dst``; False when ``dst`` is full (then the stream waits
        for room) or gone (then the stream has ended)."""
        assert self.pipe is not None
        read = self.pipe[0]
        while self.pending:
            try:
                moved = os.splice(read, self.dst_fd, self.pending, flags=SPLICE_FLAGS)
            except BlockingIOError:
                if self.reading:
                    self.reading = False
                    self.loop.remove_reader(self.src_fd)
                if not self.writing:
                    self.writing = True
                    self.loop.add_writer(self.dst_fd, self._fast_writable)
                return False
            except OSError:
                moved = 0
            if moved == 0:
                self._dest_failed()
                return False
            self.pending -= moved
            self.bytes += moved
        return True

    def _fast_writable(self) -> None:
        if not self._flush():
            return
        self.writing = False
        self.loop.remove_writer(self.dst_fd)
        self._release_pipe()
        if self.src_done:
            self._finish()
        elif self.mode == FAST:
            self.start_fast()

    def _release_pipe(self) -> None:
        if self.pipe is not None and self.pending == 0:
            PIPES.give(self.pipe)
            self.pipe = None

    # Toxic path ------------------------------------------------------------------------

    def add_toxic(self, name: str, toxic: Any, toxicity: float, buffer_size: int,
                  rng: random.Random) -> None:
        """Put a toxic at the end of this stream's chain, moving it off the fast path."""
        if self.mode == DONE:
            return
        if self.pipeline is None:
            self.pipeline = Pipeline(rng)
        if self.mode == FAST:
            self.mode = TOXIC
            if self.reading:
                self.reading = False
                self.loop.remove_reader(self.src_fd)
            if self.writing:
                self.writing = False
                self.loop.remove_writer(self.dst_fd)
            self.pipeline.add(name, toxic, toxicity, buffer_size)
            self.writer = self.loop.create_task(self._write_loop())
            if self.src_done:
                self.pipeline.head.put(END)
        else:
            self.mode = TOXIC
            self.pipeline.add(name, toxic, toxicity, buffer_size)
        self._resume()

    def update_toxic(self, name: str, toxic: Any, toxicity: float) -> None:
        """New parameters for a toxic of this stream."""
        if self.pipeline is not None and self.mode != DONE:
            self.pipeline.update(name, toxic, toxicity)

    def remove_toxic(self, name: str, close: bool) -> None:
        """Take a toxic out; with the last one gone, drain and go back to splicing."""
        if self.pipeline is None or self.mode == DONE:
            return
        self.pipeline.remove(name, close)
        if not self.pipeline.stubs:
            self.mode = DRAIN
            if self.reading:
                self.reading = False
                self.loop.remove_reader(self.src_fd)
            if self.writer_idle and not self.pipeline.tail.items and self.writer is not None:
                self.writer.cancel()
                self.writer = None
                self._back_to_fast()

    def _back_to_fast(self) -> None:
        self.pipeline = None
        self.writer_idle = False
        self.start_fast()

    def _resume(self) -> None:
        if self.mode != TOXIC or self.src_done or self.reading or self.pipeline is None:
            return
        if self.pipeline.head.full():
            self.pipeline.head.on_space(self._resume)
            return
        self.reading = True
        self.loop.add_reader(self.src_fd, self._toxic_readable)

    def _toxic_readable(self) -> None:
        try:
            data = self.src.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._source_ended()
            return
        assert self.pipeline is not None
        head = self.pipeline.head
        head.put(Chunk(data, time.monotonic()))
        if head.full():
            self.reading = False
            self.loop.remove_reader(self.src_fd)
            head.on_space(self._resume)

    async def _write_loop(self) -> None:
        while self.pending:      # what the fast path still had in its pipe goes first
            assert self.pipe is not None
            try:
                moved = os.splice(self.pipe[0], self.dst_fd, self.pending, flags=SPLICE_FLAGS)
            except BlockingIOError:
                await self._writable()
                continue
            except OSError:
                moved = 0
            if moved == 0:
                self.writer = None
                self._dest_failed()
                return
            self.pending -= moved
            self.bytes += moved
        self._release_pipe()
        while True:
            pipeline = self.pipeline
            assert pipeline is not None
            tail = pipeline.tail
            if self.mode == DRAIN and not tail.items:
                self.writer = None
                self._back_to_fast()
                return
            self.writer_idle = True
            item = await tail.get()
            self.writer_idle = False
            if isinstance(item, End):
                self.writer = None
                if item.reset:
                    self.conn.abort(reset=True)
                else:
                    self._finish()
                return
            if item is None:
                continue
            view = memoryview(item.data)
            while view:
                try:
                    sent = self.dst.send(view)
                except BlockingIOError:
                    await self._writable()
                    continue
                except OSError:
                    self.writer = None
                    self._dest_failed()
                    return
                self.bytes += sent
                view = view[sent:]

    async def _writable(self) -> None:
        future: asyncio.Future[None] = self.loop.create_future()
        self.writing = True
        self.loop.add_writer(self.dst_fd, _wake, future)
        try:
            await future
        finally:
            # A cancelled writer gets here later, when stop() has already unregistered
            # and the descriptor may belong to another socket: only undo our own.
            if self.writing:
                self.writing = False
                self.loop.remove_writer(self.dst_fd)

    # Ends ------------------------------------------------------------------------------

    def _source_ended(self) -> None:
        """The source closed or failed: pass the end down the stream."""
        if self.src_done or self.mode == DONE:
            return
        self.src_done = True
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.src_fd)
        if self.pipeline is not None:
            self.pipeline.head.put(END)
        elif self.pending == 0:
            self._finish()
        # else: the armed writer flushes the pipe, then finishes

    def _dest_failed(self) -> None:
        if self.pipe is not None:
            PIPES.discard(self.pipe)
            self.pipe, self.pending = None, 0
        self._finish()

    def _finish(self) -> None:
        if self.mode != DONE:
            self.conn.stream_finished(self)

    def stop(self) -> None:
        """Drop everything in flight: the stream has ended or the connection is torn down."""
        self.mode = DONE
        if self.reading:
            self.loop.remove_reader(self.src_fd)
        if self.writing:
            self.loop.remove_writer(self.dst_fd)
        self.reading = self.writing = False
        if self.writer is not None:
            self.writer.cancel()
            self.writer = None
        if self.pipeline is not None:
            self.pipeline.cancel()
            self.pipeline = None
        if self.pipe is not None:
            if self.pending:
                PIPES.discard(self.pipe)
            else:
                PIPES.give(self.pipe)
            self.pipe, self.pending = None, 0
