"""The sock_diag parser on bytes a real kernel sent (``data/sockdiag-dump.json``, captured with
``sockstates.py``), checked against pyroute2's decoding of the same bytes; and on those bytes
cut, repeated and damaged the ways the kernel may send them."""

from __future__ import annotations

import errno
import json
import struct
from pathlib import Path

import pytest
from pyroute2.netlink.diag import MarshalDiag

from harness.observe.sockdiag import (
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR,
    RTATTR,
    DumpError,
    Key,
    Parser,
    SockInfo,
    from_pyroute2,
    request,
)

CAPTURE = json.loads((Path(__file__).parent / "data" / "sockdiag-dump.json").read_text())
SEQ, PORT = CAPTURE["seq"], CAPTURE["port"]
PARTS = [bytes.fromhex(p) for p in CAPTURE["parts"]]
INFO_AT = 88 + 36           # where INET_DIAG_INFO starts in the captured messages


def messages(data: bytes) -> list[bytes]:
    """The netlink messages of ``data``, each with its padding."""
    out, off = [], 0
    while off < len(data):
        length = NLMSGHDR.unpack_from(data, off)[0]
        out.append(data[off:off + ((length + 3) & ~3)])
        off += (length + 3) & ~3
    return out


MSGS = messages(b"".join(PARTS))
SOCKETS, DONE = MSGS[:-1], MSGS[-1]


def reference(data: bytes) -> dict[Key, SockInfo]:
    """pyroute2's reading of the same bytes."""
    return from_pyroute2(MarshalDiag().parse(data), PORT)


def parse(parts: list[bytes], parser: Parser | None = None, seq: int = SEQ) -> dict[Key, SockInfo]:
    parser = parser or Parser()
    for i, part in enumerate(parts):
        buf = bytearray(part) + bytearray(64)     # a receive buffer is larger than a part
        done = parser.parse(buf, len(part), seq)
        assert done == (i == len(parts) - 1), f"part {i} of {len(parts)}: done={done}"
    return parser.columns().table()


def with_port(msg: bytes, port: int) -> bytes:
    """A copy of a socket message whose client port is ``port``."""
    return msg[:22] + struct.pack("!H", port) + msg[24:]


def test_the_captured_dump_reads_as_pyroute2_reads_it() -> None:
    table = parse(PARTS)
    assert table == reference(b"".join(PARTS))
    states = sorted(info.state for info in table.values())
    assert states == ["CLOSE_WAIT", "ESTABLISHED", "ESTABLISHED", "ESTABLISHED", "ESTABLISHED",
                      "FIN_WAIT2", "TIME_WAIT"]
    in_flight = [i for i in table.values() if i.unacked]
    assert len(in_flight) == 1 and in_flight[0].retransmits >= 1 and in_flight[0].timer == "on"
    assert all(k[:3] == ("10.77.1.2", PORT, "10.77.0.2") for k in table)


@pytest.mark.parametrize("cut", ["one part", "one message per part", "as captured"])
def test_where_the_parts_end_does_not_matter(cut: str) -> None:
    data = b"".join(PARTS)
    parts = {"one part": [data], "one message per part": MSGS, "as captured": PARTS}[cut]
    assert parse(parts) == reference(data)


def test_a_parser_that_learned_the_layout_reads_runs_of_it_in_bulk() -> None:
    """Many sockets of one layout in a row (the bulk path), broken by other states, read
    by a parser that knows the layout from an earlier dump and by a fresh one."""
    established = [m for m in SOCKETS if len(m) == len(SOCKETS[0])]
    others = [m for m in SOCKETS if len(m) != len(SOCKETS[0])]
    assert others, "the capture should hold sockets without tcp_info (TIME_WAIT)"
    run = [with_port(established[i % len(established)], 20000 + i) for i in range(200)]
    part = b"".join(run[:150] + others + run[150:]) + DONE
    warm = Parser()
    parse(PARTS, warm)
    assert warm.layout is not None
    expected = reference(part)
    assert len(expected) == 200 + len(others)
    assert parse([part], warm) == expected
    assert parse([part]) == expected


def test_a_shorter_tcp_info_reads_its_missing_fields_as_zero() -> None:
    msg = next(m for m in SOCKETS if len(m) > INFO_AT + 64 and m[INFO_AT + 4 + 24] == 1)  # unacked
    keep = 48               # up to tcpi_last_ack_sent: the receive times are missing
    length = INFO_AT + 4 + keep
    short = (struct.pack("=I", length) + msg[4:INFO_AT] + RTATTR.pack(4 + keep, 2)
             + msg[INFO_AT + 4:INFO_AT + 4 + keep])
    (info,) = parse([short + DONE]).values()
    (full,) = parse([msg + DONE]).values()
    assert info.unacked == full.unacked == 1 and info.rto_s == full.rto_s > 0
    assert info.last_data_sent_s == full.last_data_sent_s
    assert full.last_data_recv_s > 0 and info.last_data_recv_s == info.last_ack_recv_s == 0


def test_messages_of_another_dump_are_skipped() -> None:
    stale = b"".join(SOCKETS)
    parser = Parser()
    assert not parser.parse(stale + DONE, len(stale) + len(DONE), SEQ + 1)
    assert len(parser.columns()) == 0


def error_message(kind: int, code: int, seq: int = SEQ) -> bytes:
    body = struct.pack("=i", code) + (request(PORT, seq) if kind == NLMSG_ERROR else b"")
    return NLMSGHDR.pack(16 + len(body), kind, 0, seq, 0) + body


@pytest.mark.parametrize("kind", [NLMSG_ERROR, NLMSG_DONE])
def test_an_error_from_the_kernel_is_raised(kind: int) -> None:
    with pytest.raises(DumpError) as caught:
        parse([SOCKETS[0] + error_message(kind, -errno.EBUSY)])
    assert caught.value.code == errno.EBUSY


def test_a_message_longer_than_the_part_is_an_error() -> None:
    cut = SOCKETS[0][:-40]
    with pytest.raises(DumpError) as caught:
        Parser().parse(cut, len(cut), SEQ)
    assert caught.value.code == errno.EBADMSG


def test_the_request_filters_on_the_port_in_the_kernel() -> None:
    req = request(5432, 9)
    length, kind, flags, seq, _ = NLMSGHDR.unpack_from(req)
    assert (length, kind, flags, seq) == (len(req), 20, 0x301, 9)
    family, proto, ext, states = struct.unpack_from("=BBBxI", req, 16)
    assert (family, proto, ext) == (2, 6, 2) and states == 0xFFF & ~(1 << 10)
    # rtattr INET_DIAG_REQ_BYTECODE, then S_EQ jumping 8 on a match and 12 (reject) otherwise,
    # then the port in host order
    assert struct.unpack_from("=HHBBHBBH", req, 72) == (12, 1, 11, 8, 12, 0, 0, 5432)
