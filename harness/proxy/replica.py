"""A worker's copy of the proxy collection, kept in step with the API process's.

The API process is the only one that decides: it validates a request, applies it to its own
proxies, and its journal (``Proxy.journal``, ``ProxyServer``) records what changed as
normalized operations, which every worker applies in order through ``Replica.apply``::

    {"op": "create", "proxy": name, "listen": addr, "upstream": addr, "enabled": bool}
    {"op": "delete", "proxy": name}
    {"op": "start", "proxy": name, "listen": concrete addr}
    {"op": "stop", "proxy": name}
    {"op": "address", "proxy": name, "listen": addr, "upstream": addr}
    {"op": "add_toxic", "proxy": name, "toxic": {name, type, stream, toxicity, attributes}}
    {"op": "update_toxic", "proxy": name, "toxic": {...the toxic's whole new state}}
    {"op": "remove_toxic", "proxy": name, "name": toxic name}

Operations are the primitive changes, not the API calls, so a call that failed half-way
(``populate`` stopping at a taken port, ``reset`` failing to re-listen) is replicated as far
as it went. ``create`` replaces a proxy of the same name, as ``populate`` does. Each worker
rolls its own toxicity per connection, as the API process does for its connections.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from harness.proxy.errors import PROXY_NOT_FOUND, ApiError
from harness.proxy.proxy import Proxy, Settings

log = logging.getLogger(__name__)


class Replica:
    """The proxies of one worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proxies: dict[str, Proxy] = {}
        self._ops: dict[str, Callable[[dict[str, object]], None]] = {
            "create": self._create, "delete": self._delete, "start": self._start,
            "stop": self._stop, "address": self._address, "add_toxic": self._add_toxic,
            "update_toxic": self._update_toxic, "remove_toxic": self._remove_toxic}

    def apply(self, ops: list[dict[str, object]]) -> list[str]:
        """Apply ``ops`` in order; what went wrong, one line per failed operation (the rest
        are still applied: the API process has applied them all)."""
        errors: list[str] = []
        for op in ops:
            try:
                self._ops[str(op["op"])](op)
            except ApiError as exc:      # a listener that cannot bind here, say
                errors.append(f"{op.get('op')} {op.get('proxy')}: {exc}")
            except Exception as exc:  # a worker holding connections must not die of a bug
                log.exception("cannot apply %r", op)
                errors.append(f"{op.get('op')} {op.get('proxy')}: {type(exc).__name__}: {exc}")
        return errors

    def connections(self, name: str) -> list[dict[str, object]] | None:
        """The live connections of proxy ``name`` in this process; None when there is none."""
        proxy = self.proxies.get(name)
        return None if proxy is None else proxy.connections_json()

    def close(self) -> None:
        """Stop every proxy (the worker is exiting)."""
        for proxy in self.proxies.values():
            proxy.close()
        self.proxies.clear()

    # Operations ------------------------------------------------------------------------

    def _get(self, op: dict[str, object]) -> Proxy:
        try:
            return self.proxies[str(op["proxy"])]
        except KeyError:
            raise PROXY_NOT_FOUND() from None

    def _create(self, op: dict[str, object]) -> None:
        name = str(op["proxy"])
        old = self.proxies.pop(name, None)
        if old is not None:
            old.close()
        proxy = Proxy(self.settings, name, str(op["listen"]), str(op["upstream"]))
        self.proxies[name] = proxy
        if op["enabled"]:
            proxy.start()

    def _delete(self, op: dict[str, object]) -> None:
        self._get(op).close()
        del self.proxies[str(op["proxy"])]

    def _start(self, op: dict[str, object]) -> None:
        proxy = self._get(op)
        if not proxy.enabled:
            proxy.listen = str(op["listen"])
        proxy.start()

    def _stop(self, op: dict[str, object]) -> None:
        self._get(op).stop()

    def _address(self, op: dict[str, object]) -> None:
        proxy = self._get(op)
        proxy.stop()
        proxy.listen, proxy.upstream = str(op["listen"]), str(op["upstream"])

    def _add_toxic(self, op: dict[str, object]) -> None:
        self._get(op).add_toxic(op["toxic"])

    def _update_toxic(self, op: dict[str, object]) -> None:
        state = op["toxic"]
        if not isinstance(state, dict):
            raise TypeError("toxic state is not an object")
        self._get(op).update_toxic(str(state["name"]), state)

    def _remove_toxic(self, op: dict[str, object]) -> None:
        self._get(op).remove_toxic(str(op["name"]))
