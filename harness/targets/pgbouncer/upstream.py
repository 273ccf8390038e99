"""What pgbouncer does with each leg of a faulted session: pure arithmetic, no I/O.

The client leg: the kernel's keepalive or user timeout (``socket_settings``), or
pgbouncer's own ``client_idle_timeout``, which its janitor enforces (every 1/3 s) only on
clients that hold no server: in session pooling a client that has run a query keeps its
server until it goes, so there the timeout never fires.

The upstream leg (session pooling): when the client leg goes, pgbouncer releases the
server; ``server_reset_query`` (DISCARD ALL by default) runs on it and its answer restarts
the server's idle clock (``server->request_time``). It is then in the pool until the
janitor finds it idle longer than ``server_idle_timeout`` (and the pool above
``min_pool_size``), or older than ``server_lifetime``: then it is closed. In transaction and
statement pooling the server went back to the pool when the session's last transaction
ended, before the fault.
"""

from __future__ import annotations

from harness.core.assess import SessionFacts
from harness.core.prediction import Prediction, format_seconds
from harness.targets.base import UpstreamPrediction
from harness.targets.pgbouncer.config import JANITOR_PERIOD_S, Settings

_J = "pgbouncer's janitor runs every 1/3 s"


def client_idle(settings: Settings, last_activity_s: float) -> tuple[Prediction | None, float | None]:
    """pgbouncer's ``client_idle_timeout`` as the client leg's heartbeat: its prediction and
    when pgbouncer first writes to the dead client (its error message, as it closes)."""
    timeout = settings.client_idle_timeout_s
    if timeout <= 0 or settings.pool_mode == "session":
        return None, None
    # the janitor acts at its first round past the timeout: half a period late on average
    at = last_activity_s + timeout + JANITOR_PERIOD_S / 2
    formula = (f"last activity {format_seconds(last_activity_s)} s + client_idle_timeout"
               f" {format_seconds(timeout)} s + half a janitor round {format_seconds(JANITOR_PERIOD_S / 2)} s"
               f" ({settings.pool_mode} pooling: the client holds no server between transactions; {_J})")
    return Prediction(reclaim_s=at, mechanism="heartbeat", formula=formula, slack_s=JANITOR_PERIOD_S), at


def predict_upstream(settings: Settings, client: Prediction | None,
                     facts: SessionFacts) -> UpstreamPrediction:
    """The upstream leg of a faulted session, once its client leg is reclaimed."""
    if settings.pool_mode != "session":
        return UpstreamPrediction(
            "pooled", facts.last_activity_s, "pool",
            f"{settings.pool_mode} pooling: the server went back to the pool when the last"
            f" transaction ended ({format_seconds(facts.last_activity_s)} s)")
    if client is None or client.reclaim_s is None:
        return UpstreamPrediction(
            "held", None, "client-held",
            "session pooling: pgbouncer keeps the server for as long as the client leg lives,"
            " and nothing reclaims the client leg")
    gone = client.reclaim_s
    slack = JANITOR_PERIOD_S + client.slack_s
    pooled = f"pooled at the client leg's reclaim {format_seconds(gone)} s"
    if settings.min_pool_size > 0:
        return UpstreamPrediction("pooled", gone, "pool",
                                  f"{pooled}; min_pool_size {settings.min_pool_size} keeps it",
                                  slack_s=client.slack_s)
    candidates: list[tuple[float, str, str]] = []
    if settings.server_idle_timeout_s > 0:
        idle_from, why = ((gone, "server_reset_query answers then") if settings.reset_query
                          else (facts.last_activity_s, "no server_reset_query: idle since the last activity"))
        candidates.append((max(gone, idle_from + settings.server_idle_timeout_s), "server_idle_timeout",
                           f"{pooled}, closed at {format_seconds(idle_from)} s ({why}) + server_idle_timeout"
                           f" {format_seconds(settings.server_idle_timeout_s)} s; {_J}"))
    if settings.server_lifetime_s > 0:
        candidates.append((max(gone, facts.opened_s + settings.server_lifetime_s), "server_lifetime",
                           f"{pooled}, closed at opened {format_seconds(facts.opened_s)} s +"
                           f" server_lifetime {format_seconds(settings.server_lifetime_s)} s; {_J}"))
    if not candidates:
        return UpstreamPrediction("pooled", gone, "pool",
                                  f"{pooled}; server_idle_timeout and server_lifetime are 0: it stays",
                                  slack_s=client.slack_s)
    at, mechanism, formula = min(candidates)
    # the janitor closes it at its first round past the timeout: half a period late on average
    return UpstreamPrediction("closed", at + JANITOR_PERIOD_S / 2, mechanism,
                              f"{formula}, + half a round {format_seconds(JANITOR_PERIOD_S / 2)} s",
                              slack_s=slack)
