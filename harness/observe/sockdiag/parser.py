"""The parser of sock_diag dumps: the kernel's messages, as received, into ``Columns``."""

from __future__ import annotations

import errno
from dataclasses import dataclass

import numpy as np

from harness.observe.sockdiag.table import Columns
from harness.observe.sockdiag.wire import (
    DIAG_END,
    DIAG_FIELDS,
    DIAG_MSG,
    INET_DIAG_INFO,
    INFO_FIELDS,
    NLMSG_DONE,
    NLMSG_ERRNO,
    NLMSG_ERROR,
    NLMSG_LEN,
    NLMSGHDR,
    ROW,
    RTATTR,
    SOCK_DIAG_BY_FAMILY,
    SWAP_PORTS,
    TCP_INFO,
    DumpError,
)

NO_INFO = (0, 0, 0, 0, 0, 0, 0, 0)


@dataclass(frozen=True)
class Layout:
    """Where things are in one kind of socket message: the kernel writes the same
    attributes before INET_DIAG_INFO for every socket of a dump, so the layout of the first
    one serves the rest."""

    length: int             # nlmsg_len
    info_at: int            # offset of the INET_DIAG_INFO attribute in the message
    attr_len: int           # its rta_len
    checks: np.dtype        # one aligned message: the header fields every message must share
    fields: np.dtype        # the same message: ROW's fields, in place, in ROW's order

    @classmethod
    def at(cls, length: int, info_at: int, attr_len: int) -> Layout:
        info = info_at + RTATTR.size
        checks = {"len": (0, "u4"), "type": (4, "u2"), "seq": (8, "u4"),
                  "attr_len": (info_at, "u2"), "attr_type": (info_at + 2, "u2")}
        fields = {**{k: (NLMSG_LEN + at, kind) for k, (at, kind) in DIAG_FIELDS.items()},
                  **{k: (info + at, kind) for k, (at, kind) in INFO_FIELDS.items()}}
        assert tuple(fields) == ROW.names
        return cls(length, info_at, attr_len, _view(checks, length), _view(fields, length))

    def heads(self, buf: bytes | bytearray, off: int, seq: int) -> bool:
        """Whether the message at ``off`` has this layout's header (length, type, sequence
        number, the INET_DIAG_INFO attribute's header)."""
        length, kind, _, mseq, _ = NLMSGHDR.unpack_from(buf, off)
        return (length == self.length and kind == SOCK_DIAG_BY_FAMILY and mseq == seq
                and RTATTR.unpack_from(buf, off + self.info_at) == (self.attr_len, INET_DIAG_INFO))


class Parser:
    """Turns the kernel's dump parts into ``Columns``, as cheaply per socket as possible.

    A dump part is mostly a run of messages of one layout (every ESTABLISHED socket looks
    alike). Such a run is read without a Python loop: numpy views the part as an array of
    the layout's messages, checks every header at once (length, type, sequence number, the
    INET_DIAG_INFO header) and copies ROW's fields of the leading run out, 0.1 µs per
    socket here, against 1.1 µs for decoding each message into Python objects. Any other
    message (another state's, NLMSG_DONE, an error) is read field by field, which also
    learns a new layout, and a run may start again after it.
    """

    def __init__(self) -> None:
        self.layout: Layout | None = None
        self._chunks: list[np.ndarray] = []
        self._single: list[tuple[int, ...]] = []

    def parse(self, buf: bytes | bytearray, size: int, seq: int) -> bool:
        """Read one received dump part (``buf[:size]``); True when the part ends the dump
        (NLMSG_DONE). ``columns()`` then gives what was read since the last call.

        Messages of another sequence number (a dump an earlier, interrupted call left
        unread) are skipped. Raises DumpError for NLMSG_ERROR or an error in NLMSG_DONE.
        """
        off = 0
        while off + NLMSG_LEN <= size:
            layout = self.layout
            if (layout is not None and off + layout.fields.itemsize <= size
                    and layout.heads(buf, off, seq)):
                off += self._run(buf, off, size, seq, layout)
                continue
            length, kind, _, mseq, _ = NLMSGHDR.unpack_from(buf, off)
            fields = self._walk(buf, off, size, length, kind, mseq, seq)
            if fields is not None:
                self._single.append(fields)
            elif kind == NLMSG_DONE and mseq == seq:
                return True
            off += _align(length)
        return False

    def columns(self) -> Columns:
        """The sockets read since the last call, in the order they came."""
        self._flush()
        chunks, self._chunks = self._chunks, []
        if not chunks:
            return Columns(np.empty(0, dtype=ROW))
        return Columns(chunks[0] if len(chunks) == 1 else np.concatenate(chunks))

    def _flush(self) -> None:
        if self._single:
            self._chunks.append(np.array(self._single, dtype=ROW))
            self._single = []

    def _run(self, buf: bytes | bytearray, off: int, size: int, seq: int, layout: Layout) -> int:
        """Copy out the run of messages of ``layout`` that starts at ``off`` (its first one
        is known to match); how many bytes it spans."""
        count = (size - off) // layout.fields.itemsize
        msgs = np.frombuffer(buf, dtype=layout.checks, count=count, offset=off)
        good = ((msgs["len"] == layout.length) & (msgs["type"] == SOCK_DIAG_BY_FAMILY)
                & (msgs["seq"] == seq) & (msgs["attr_len"] == layout.attr_len)
                & (msgs["attr_type"] == INET_DIAG_INFO))
        n = count if good.all() else int(good.argmin())   # up to the first odd one
        self._flush()
        rows = np.frombuffer(buf, dtype=layout.fields, count=n, offset=off)
        self._chunks.append(rows.astype(ROW))   # ROW's fields by position, ports swapped
        return n * layout.fields.itemsize

    def _walk(self, buf: bytes | bytearray, off: int, size: int, length: int,
              kind: int, mseq: int, seq: int) -> tuple[int, ...] | None:
        """One message read field by field: a socket's ROW (learning its layout), or None
        for anything that is not a socket of this dump."""
        if length < NLMSG_LEN or off + length > size:
            raise DumpError(errno.EBADMSG)
        if mseq != seq:
            return None
        if kind in (NLMSG_DONE, NLMSG_ERROR):
            code = (NLMSG_ERRNO.unpack_from(buf, off + NLMSG_LEN)[0]
                    if length >= NLMSG_LEN + NLMSG_ERRNO.size else 0)
            if code < 0:
                raise DumpError(-code)
            return None
        if kind != SOCK_DIAG_BY_FAMILY or length < DIAG_END:
            return None
        state, timer, sport, dport, src, dst, inode = DIAG_MSG.unpack_from(buf, off + NLMSG_LEN)
        if SWAP_PORTS:
            sport, dport = _swap(sport), _swap(dport)
        info: tuple[int, ...] = NO_INFO
        at, end = off + DIAG_END, off + length
        while at + RTATTR.size <= end:
            alen, atype = RTATTR.unpack_from(buf, at)
            if alen < RTATTR.size or at + alen > end:
                break
            if atype == INET_DIAG_INFO:
                if alen - RTATTR.size >= TCP_INFO.size:
                    info = TCP_INFO.unpack_from(buf, at + RTATTR.size)
                    if self.layout is None or self.layout.length != length:
                        self.layout = Layout.at(length, at - off, alen)
                else:   # an older kernel's shorter tcp_info: the missing fields read 0
                    raw = bytes(buf[at + RTATTR.size:at + alen])
                    info = TCP_INFO.unpack(raw.ljust(TCP_INFO.size, b"\0"))
                break
            at += _align(alen)
        return (state, timer, sport, dport, src, dst, inode) + info


def _align(n: int) -> int:
    return (n + 3) & ~3


def _view(fields: dict[str, tuple[int, str]], length: int) -> np.dtype:
    """A dtype of one aligned message of ``length`` bytes holding ``fields`` (name: offset,
    type) where they are: numpy reads them in place, whatever their alignment."""
    return np.dtype({"names": list(fields), "formats": [kind for _, kind in fields.values()],
                     "offsets": [at for at, _ in fields.values()], "itemsize": _align(length)})


def _swap(port: int) -> int:
    return ((port & 0xFF) << 8) | (port >> 8)
