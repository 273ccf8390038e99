"""The kernel's TCP socket table of one namespace, through sock_diag.

The netlink socket is opened from inside the namespace, so every dump shows that namespace's
table: the server's view of each session (state, timer, keepalive probes, retransmissions).

The observer dumps the table every sample for every session at once, so this is the hot path
of a run with thousands of sessions. It has its own small reader instead of pyroute2's
``DiagSocket``, which decodes every field of every message into Python objects (0.15 to
0.25 ms per socket in ``connchaos bench sockdiag``: 1.5 to 2.5 s per sample at 10,000
sockets). This reader sends one dump request with an in-kernel filter on the port, receives
the whole dump into one buffer, and numpy reads the fields ``SockInfo`` needs out of the
messages in place, into ``Columns`` (one array row per socket, no Python object per
socket): 9 to 16 ms per sample at 10,000 sockets on the development machine, nearly all of
it the kernel's. ``dump`` gives the same table as ``SockInfo`` objects, for the callers
that want them (about 3 µs per socket). pyroute2 stays the project's netlink library for
everything else; ``pyroute2_dump`` is the old reader, kept as the reference the tests and
the benchmark compare with.

Modules: ``wire`` (the kernel's constants and message layouts, the dump request),
``table`` (the table as values: ``Key``, ``SockInfo``, ``Columns``), ``parser`` (dump parts
into ``Columns``), ``reader`` (``SocketTable``, the ``TableReader`` Protocol, and pyroute2's
reader). The names below are the package's interface.
"""

from harness.observe.sockdiag.parser import Parser
from harness.observe.sockdiag.reader import (
    SocketTable,
    TableReader,
    from_pyroute2,
    open_pyroute2,
    pyroute2_dump,
)
from harness.observe.sockdiag.table import Columns, Key, SockInfo, address_int, address_text
from harness.observe.sockdiag.wire import (
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR,
    ROW,
    RTATTR,
    STATE_CODES,
    STATE_NAMES,
    TCP_STATES,
    TIME_WAIT,
    TIMERS,
    DumpError,
    request,
)

__all__ = [
    "NLMSGHDR", "NLMSG_DONE", "NLMSG_ERROR", "ROW", "RTATTR", "STATE_CODES", "STATE_NAMES",
    "TCP_STATES", "TIMERS", "TIME_WAIT", "Columns", "DumpError", "Key", "Parser", "SockInfo",
    "SocketTable", "TableReader", "address_int", "address_text", "from_pyroute2",
    "open_pyroute2", "pyroute2_dump", "request",
]
