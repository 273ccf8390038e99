"""``connchaos up``: a lab held open by hand, to reproduce a half-open connection."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from harness.lab import naming
from harness.lab.middlebox import TABLE as MIDDLEBOX_TABLE
from harness.lab.toxiproxy import FAULTED
from harness.run.phases import Planned, new_lab, start_middlebox
from harness.run.plain import open_sessions
from harness.run.routing import ProxyRouting, setup_routing
from harness.scenario import LoadedScenario


def hold_open(ls: LoadedScenario, *, inject: bool, show: Callable[[str], None],
              run_id: str, wait: Callable[[], None] | None = None,
              proxy_command: Sequence[str] | None = None, backend: str = "local") -> int:
    """``connchaos up``: build the lab, start the target, open the sessions (and optionally
    inject the fault), then hold everything until Ctrl-C or SIGTERM, and tear it down."""
    spec = ls.scenario
    planned = Planned.of(ls, run_id)
    target = planned.target
    count = spec.sessions.count
    faulted_ids = set(range(spec.fault.pick_count(count)))
    with new_lab(backend, run_id) as lab:
        if planned.middlebox is not None:
            start_middlebox(lab, planned)
        target.start(lab)
        routing = setup_routing(lab, target, spec.fault.layer or "packet", faulted_ids, proxy_command,
                                nat=planned.conntrack if planned.nat else None)
        hosted = faulted_ids if getattr(planned.fault, "holds_sessions", False) else None
        sessions = open_sessions(lab, target, count, routing, hosted)
        d = lab.describe()
        show(f"lab {lab.lab_id} is up ({lab.backend}): {spec.target.service} at"
             f" {d['server_addr']}:{target.port} in {d['server_ns']}; clients in {d['client_ns']}"
             f" ({d['client_addr']}); router {d['router_ns']}")
        if "containers" in d:
            show(f"containers: {d['containers']}; networks: {d['networks']}")
        if type(routing) is ProxyRouting:
            show(f"proxies in {lab.router_ns}: " + ", ".join(
                f"{n} {h}:{p}" for n, (h, p) in routing.listen.items())
                + f"; API: {lab.reach.shell_hint('rtr', 'curl -s 127.0.0.1:8474/proxies')}")
        show(f"{len(sessions)} sessions held open: " + ", ".join(
            f"#{s.id} {s.flow.client_addr}:{s.flow.client_port} (server pid {s.pid})" for s in sessions[:10])
            + (" ..." if len(sessions) > 10 else ""))
        if planned.middlebox is not None:
            show(f"middlebox in {lab.router_ns}: {planned.middlebox.describe()}; entries: "
                 + lab.reach.shell_hint("rtr", "conntrack -L -p tcp")
                 + f"; rules: nft list table {MIDDLEBOX_TABLE}")
        show(f"client shell:  {lab.reach.shell_hint('cli', 'bash', interactive=True)}")
        show(f"server table:  {lab.reach.shell_hint('srv', f'ss -tnoi sport = :{target.port}')}")
        if inject:
            time.sleep(spec.sessions.hold)
            fault = planned.fault
            chosen = [s for s in sessions if s.id in faulted_ids]
            site = routing.fault_site(lab, chosen, routing.server_keys(target, chosen))
            fault.apply(dataclasses.replace(site, host=sessions.host))
            lab.on_close("fault", fault.revert)
            if fault.layer == "proxy":
                where = f"proxy {FAULTED}"
            elif sessions.host is not None:
                where = (f"session host pid {sessions.host.pid} stopped (state T in"
                         f" /proc/{sessions.host.pid}/stat); its sockets: "
                         + lab.reach.shell_hint("cli", "ss -tnoi"))
            elif getattr(fault, "silences_sessions", False):
                where = ("nothing talks on any session here, so every entry expires: "
                         + lab.reach.shell_hint("rtr", "conntrack -L -p tcp"))
            else:
                role = "rtr" if getattr(fault, "where", "") == "router" else "cli"
                where = "rules: " + lab.reach.shell_hint(role, f"nft list table inet {naming.NFT_TABLE}")
            show(f"fault {spec.fault.type} ({fault.describe()}) applied to sessions"
                 f" {sorted(faulted_ids)[:10]}{' ...' if len(faulted_ids) > 10 else ''}; {where}")
        show("holding; Ctrl-C tears the lab down")
        try:
            (wait or _forever)()
        except KeyboardInterrupt:
            show("tearing down")
    return 0


def _forever() -> None:
    while True:
        time.sleep(3600)
