"""Addresses as Go writes them, and the listening sockets of proxies.

A listener is bound one of three ways (``Share``):

- ``ALONE``: one process serves the address, as Toxiproxy does (SO_REUSEADDR only).
- ``LEAD``: the API process of a multi-process server. The address must be free as for
  ``ALONE`` (a port another proxy, or anyone, listens on is "address already in use"), and
  the socket is then bound with SO_REUSEPORT so that the workers can join it. ``:0`` becomes
  a concrete port here, which the workers are sent.
- ``JOIN``: a worker, binding the leader's concrete address with SO_REUSEPORT; the kernel
  then spreads new connections over every member's listener.

With SO_REUSEPORT alone a second proxy on a taken port would silently share it, so the
leader first binds a probe socket without SO_REUSEPORT: that bind fails exactly where
``ALONE`` would (any listener on the port, ours included, blocks it). The probe is held,
bound but not listening, while the real socket binds the same port (SO_REUSEADDR on both
lets a listener join a socket that does not listen), so no one can take the port between.
One exception: an address the leader has just released (``rejoin``) may still be held by
workers that have not applied the release yet (a proxy restarting on its own port, as an
upstream change does); the probe would see them, so there the leader joins directly.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Container
from typing import Literal

from harness.proxy.connection import literal_family
from harness.proxy.errors import internal

Share = Literal["alone", "lead", "join"]
ALONE: Share = "alone"
LEAD: Share = "lead"
JOIN: Share = "join"
BACKLOG = 4096


def split_host_port(text: str) -> tuple[str, str]:
    """Go's ``net.SplitHostPort``, with its complaints."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"address {text}: missing ']' in address")
        if not text[end + 1:].startswith(":"):
            raise ValueError(f"address {text}: missing port in address")
        return text[1:end], text[end + 2:]
    if ":" not in text:
        raise ValueError(f"address {text}: missing port in address")
    host, _, port = text.rpartition(":")
    if ":" in host:
        raise ValueError(f"address {text}: too many colons in address")
    return host, port


def parse_port(port: str) -> int:
    """A port number from its text (0 when empty, as Go allows)."""
    if port == "":
        return 0
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {port}: invalid port")
    return int(port)


def join_host_port(host: str, port: int) -> str:
    """``host:port``, bracketing IPv6 as Go does."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve_listen(text: str, default_host: str) -> tuple[int, str, int]:
    """(family, ip, port) to bind for a ``listen`` address; ValueError with Go's text."""
    if text == "":
        host, port = default_host, 0
    else:
        host, port_text = split_host_port(text)
        port = parse_port(port_text)
    if host == "":
        return socket.AF_INET6, "::", port
    family = literal_family(host)
    if family is not None:
        return family, host, port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise ValueError(f"lookup {host}: no such host") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)   # Go listens on IPv4 first
    family, address = infos[0][0], infos[0][4]
    return family, str(address[0]), port


def bind_listener(text: str, default_host: str, share: Share = ALONE,
                  rejoin: Container[str] = ()) -> socket.socket:
    """A listening, non-blocking socket for ``listen``; errors read like Go's. ``rejoin``:
    addresses (``host:port``) that only this server's own workers may still hold."""
    try:
        family, host, port = resolve_listen(text, default_host)
    except ValueError as exc:
        raise internal(f"listen tcp: {exc}") from None
    families = [family] + ([socket.AF_INET] if host == "::" else [])
    for attempt in families:
        bind_host = "0.0.0.0" if attempt != family else host
        try:
            if share == LEAD and join_host_port(bind_host, port) in rejoin:
                return _listen(attempt, bind_host, port, JOIN)
            return _listen(attempt, bind_host, port, share)
        except OSError as exc:
            if attempt == families[-1]:
                reason = os.strerror(exc.errno or 0) if exc.errno else str(exc)
                reason = reason[:1].lower() + reason[1:]
                raise internal(
                    f"listen tcp {join_host_port(bind_host, port)}: bind: {reason}") from None
    raise internal("listen tcp: no address")  # pragma: no cover - families is never empty


def _socket(family: int, host: str, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    except BaseException:
        sock.close()
        raise
    return sock


def _listen(family: int, host: str, port: int, share: Share) -> socket.socket:
    probe: socket.socket | None = None
    try:
        if share == LEAD:
            probe = _socket(family, host, reuse_port=False)
            probe.bind((host, port))
            port = probe.getsockname()[1]
        sock = _socket(family, host, reuse_port=share != ALONE)
        try:
            sock.bind((host, port))
            sock.listen(BACKLOG)
        except BaseException:
            sock.close()
            raise
        return sock
    finally:
        if probe is not None:
            probe.close()
