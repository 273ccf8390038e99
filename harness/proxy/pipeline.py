"""The toxic pipeline of one stream of one connection: chunks flow from the socket reader
through a chain of stubs (one per toxic) to the socket writer.

This is Toxiproxy's ``ToxicLink`` and ``ToxicStub`` (link.go, toxics/toxic.go) on one asyncio
loop instead of goroutines::

    reader > Channel > Stub(latency) > Channel > Stub(bandwidth) > Channel (tail) > writer

Toxics are added at the end of the chain, updated in place and removed from anywhere, while
data flows. Toxiproxy interrupts the goroutine of a stub and has it flush the chunk it holds;
here a stub's task is cancelled and the chunk it holds (``Stub.held``) is put on its output.
That is exact, not racy: a cancelled task never resumes from the await it was parked on, and
every channel operation that moves data happens synchronously, between awaits. So adding,
updating and removing are synchronous and keep the order of the bytes.

A channel's ``put`` never waits while holding data: it appends, and the producer then waits
for room if the channel is over its limit. That keeps back-pressure (a slow toxic stops the
socket reader) while letting the chain be rewired without data in flight anywhere else.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Chunk:
    """Bytes read from a socket, with the ``time.monotonic()`` they arrived (the latency
    toxic's clock)."""

    __slots__ = ("data", "ts")

    def __init__(self, data: bytes, ts: float) -> None:
        self.data = data
        self.ts = ts


class End:
    """The end of a stream: a close (FIN) or, from ``reset_peer``, a reset (RST)."""

    __slots__ = ("reset",)

    def __init__(self, reset: bool) -> None:
        self.reset = reset


END = End(reset=False)
RESET = End(reset=True)
Item = Chunk | End


class Channel:
    """A FIFO between two stages, with a soft limit for back-pressure."""

    __slots__ = ("items", "limit", "_getter", "_space")

    def __init__(self, limit: int = 1) -> None:
        self.items: deque[Item] = deque()
        self.limit = max(1, limit)
        self._getter: asyncio.Future[bool] | None = None
        self._space: list[Callable[[], None]] = []

    def put(self, item: Item) -> None:
        """Append ``item`` now; never waits."""
        self.items.append(item)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(True)

    def full(self) -> bool:
        """Over the limit: the producer should wait for room."""
        return len(self.items) >= self.limit

    def on_space(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, when the channel has room again (or is released)."""
        if not self.full():
            callback()
        else:
            self._space.append(callback)

    async def wait_space(self) -> None:
        """Wait until the channel has room (or is released)."""
        if not self.full():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._space.append(lambda: _resolve(future))
        await future

    def release(self) -> None:
        """Wake every producer waiting for room: the channel is leaving the chain."""
        waiting, self._space = self._space, []
        for callback in waiting:
            callback()

    async def get(self, timeout: float | None = None) -> Item | None:
        """The next item; None if ``timeout`` seconds pass first. Cancel-safe: a cancelled
        get takes nothing."""
        if not self.items:
            loop = asyncio.get_running_loop()
            getter: asyncio.Future[bool] = loop.create_future()
            self._getter = getter
            timer = (loop.call_later(max(0.0, timeout), _expire, getter)
                     if timeout is not None else None)
            try:
                await getter
            finally:
                if timer is not None:
                    timer.cancel()
                if self._getter is getter:
                    self._getter = None
            if not self.items:
                return None
        item = self.items.popleft()
        if self._space and len(self.items) < self.limit:
            self.release()
        return item


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _expire(getter: asyncio.Future[bool]) -> None:
    if not getter.done():
        getter.set_result(False)


class Toxic(Protocol):
    """What a stub runs: one toxic's parameters and its ``pipe`` method."""

    async def pipe(self, stub: Stub) -> None:
        """Move items from ``stub``'s input to its output until closed or cancelled."""


class Stub:
    """One toxic's place in a chain: its input, its output, its per-connection state and the
    chunk it holds while it works on it."""

    __slots__ = ("name", "toxic", "active", "input", "output", "state", "held", "task",
                 "closed", "rng")

    def __init__(self, name: str, toxic: Toxic, active: bool, input: Channel, output: Channel,
                 rng: random.Random) -> None:
        self.name = name
        self.toxic = toxic
        self.active = active
        self.input = input
        self.output = output
        self.state: dict[str, int] = {}
        self.held: Item | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.rng = rng

    # What toxics use -------------------------------------------------------------------

    async def recv(self, timeout: float | None = None) -> Item | None:
        """The next item (now held by this stub), or None after ``timeout`` seconds."""
        item = await self.input.get(timeout)
        self.held = item
        return item

    async def chunks(self) -> AsyncIterator[Chunk]:
        """The data chunks in order, each held by this stub while the toxic works on it; at the
        end of the stream the stub closes its output (passing the end on) and iteration stops."""
        while True:
            item = await self.recv()
            if isinstance(item, End):
                self.close(item)
                return
            if item is not None:
                yield item

    async def send(self, item: Item, rest: Chunk | None = None) -> None:
        """Put ``item`` on the output; ``rest`` is what the stub still holds afterwards."""
        self.output.put(item)
        self.held = rest
        if self.output.full():
            await self.output.wait_space()

    def discard(self) -> None:
        """Drop the held item on the ground (the timeout toxic's way)."""
        self.held = None

    def close(self, end: End = END) -> None:
        """End the stream here: the writer closes the connection (or resets it)."""
        self.held = None
        if not self.closed:
            self.closed = True
            self.output.put(end)

    def now(self) -> float:
        """The toxics' clock, in seconds: ``time.monotonic()``. Not the loop's clock, which
        under uvloop is whole milliseconds."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Wait at least ``seconds`` (nothing for zero or less). A loop's timer may fire up to
        a millisecond early (uvloop's are whole milliseconds), so it sleeps again for what is
        left: a 150 ms latency is never 149.95 ms, as Go's timers promise in Toxiproxy."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(left)

    # What the pipeline uses ------------------------------------------------------------

    def start(self) -> None:
        """Run the toxic (or a pass-through, when the toxicity roll said no)."""
        if not self.closed:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            if self.active:
                await self.toxic.pipe(self)
            else:
                await passthrough(self)
        except asyncio.CancelledError:
            raise
        except Exception:  # a toxic must not take the loop down; fail closed
            log.exception("toxic %s failed; closing its stream", self.name)
            self.close()

    def stop(self) -> None:
        """Interrupt the toxic and flush what it held, now."""
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
        if self.held is not None and not self.closed:
            self.output.put(self.held)
            if isinstance(self.held, End):
                self.closed = True
        self.held = None


async def passthrough(stub: Stub) -> None:
    """Forward everything unchanged (the noop toxic, and any toxic whose toxicity roll
    came out against it)."""
    async for item in stub.chunks():
        await stub.send(item)


class Pipeline:
    """The chain of one stream: ``head`` is where the reader puts, ``tail`` where the writer
    takes; ``tail`` never changes, ``head`` does when the first stub comes or goes."""

    __slots__ = ("head", "tail", "stubs", "rng")

    def __init__(self, rng: random.Random) -> None:
        self.tail = Channel(1)
        self.head = self.tail
        self.stubs: list[Stub] = []
        self.rng = rng

    def add(self, name: str, toxic: Toxic, toxicity: float, buffer_size: int) -> None:
        """Append a toxic at the end of the chain and start it."""
        newin = Channel(buffer_size)
        stub = Stub(name, toxic, self.rng.random() < toxicity, newin, self.tail, self.rng)
        if self.stubs:
            self.stubs[-1].output = newin
        else:
            self.head = newin
        self.stubs.append(stub)
        stub.start()

    def update(self, name: str, toxic: Toxic, toxicity: float) -> None:
        """Restart the named toxic with new parameters (its state is kept)."""
        for stub in self.stubs:
            if stub.name == name:
                stub.stop()
                stub.toxic = toxic
                stub.active = self.rng.random() < toxicity
                stub.start()
                return

    def remove(self, name: str, close: bool) -> None:
        """Take the named toxic out; ``close`` ends the stream there (the timeout toxic's
        cleanup), otherwise what it had queued moves on, in order."""
        index = next((i for i, stub in enumerate(self.stubs) if stub.name == name), None)
        if index is None:
            return
        stub = self.stubs[index]
        stub.stop()
        if close:
            stub.input.items.clear()
            stub.close()
        else:
            while stub.input.items:
                stub.output.put(stub.input.items.popleft())
        if index > 0:
            self.stubs[index - 1].output = stub.output
        else:
            self.head = stub.output
        del self.stubs[index]
        stub.input.release()

    def cancel(self) -> None:
        """Stop every toxic without flushing (the connection is going away)."""
        for stub in self.stubs:
            task, stub.task = stub.task, None
            if task is not None and not task.done():
                task.cancel()
            stub.held = None
