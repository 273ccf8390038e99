"""The kernel's TCP defaults as one namespace sees them (per-namespace sysctls)."""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Callable

from harness.core.prediction import KernelDefaults
from harness.lab.netns import read_sysctl


def config_hz() -> int:
    """CONFIG_HZ of the running kernel (timer granularity); 250 when it cannot be read."""
    release = os.uname().release
    for path in (f"/boot/config-{release}", "/proc/config.gz"):
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt") as f:
                m = re.search(r"^CONFIG_HZ=(\d+)$", f.read(), re.M)
                if m:
                    return int(m.group(1))
        except OSError:
            continue
    return 250


def kernel_defaults(namespace: str) -> KernelDefaults:
    """The keepalive and retransmission sysctls of ``namespace``."""
    return from_sysctls(lambda key: read_sysctl(namespace, f"net.ipv4.{key}"))


def from_sysctls(get: Callable[[str], str]) -> KernelDefaults:
    """The defaults from a reader of ``net.ipv4.<key>`` (here, or the observer's agent)."""
    return KernelDefaults(
        keepalive_time_s=float(get("tcp_keepalive_time")),
        keepalive_intvl_s=float(get("tcp_keepalive_intvl")),
        keepalive_probes=int(get("tcp_keepalive_probes")),
        tcp_retries2=int(get("tcp_retries2")),
        hz=config_hz(),
    )
