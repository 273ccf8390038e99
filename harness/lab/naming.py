"""Names of everything the harness creates, so that every object is findable and owned.

DESIGN.md: network namespaces and links start with ``cc-``; nftables tables are named
``connchaos``; temporary folders start with ``connchaos-``. Nothing outside these names is
ever changed or removed, and inside them only what an owner record proves ours
(``harness.lab.owner``): a lab id in a name says which lab's it is, the record whether that
lab's run is gone.
"""

from __future__ import annotations

import secrets

PREFIX = "cc-"
NFT_TABLE = "connchaos"
TMP_PREFIX = "connchaos-"
OWNER_FILE = "owner.json"

# Every lab is isolated (its namespaces are not connected to the host), so all labs reuse
# the same addresses from one dedicated range without conflict.
CLIENT_NET = "10.77.0.0/24"
CLIENT_ADDR = "10.77.0.2"
ROUTER_CLIENT_ADDR = "10.77.0.1"
SERVER_NET = "10.77.1.0/24"
SERVER_ADDR = "10.77.1.2"
ROUTER_SERVER_ADDR = "10.77.1.1"
PREFIXLEN = 24


def new_lab_id() -> str:
    """A short random id: namespace and link names must fit in 15 characters."""
    return secrets.token_hex(3)


def namespace(lab_id: str, role: str) -> str:
    """``cc-<lab>-cli``, ``cc-<lab>-rtr`` or ``cc-<lab>-srv``."""
    return f"{PREFIX}{lab_id}-{role}"


def link(lab_id: str, end: str) -> str:
    """A veth end name (at most 15 characters): ``cc-<lab>-c``, ``cc-<lab>-rc`` ..."""
    name = f"{PREFIX}{lab_id}-{end}"
    assert len(name) <= 15, name
    return name


def lab_id_of(name: str) -> str | None:
    """The lab id in a namespace, link or temporary folder name we created, else None."""
    for prefix in (PREFIX, TMP_PREFIX):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            lab = rest.split("-", 1)[0]
            if len(lab) == 6 and all(c in "0123456789abcdef" for c in lab):
                return lab
    return None
