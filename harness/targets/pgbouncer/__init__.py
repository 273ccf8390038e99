"""``service: pgbouncer``: Debian's pgbouncer in front of the lab's PostgreSQL (a tier).

``config`` reads and checks pgbouncer's settings (with pgbouncer itself), ``upstream`` is
the arithmetic of both legs, ``target`` runs it.
"""

from harness.targets.base import Upstream, UpstreamPrediction
from harness.targets.pgbouncer.target import PgbouncerTarget

__all__ = ["PgbouncerTarget", "Upstream", "UpstreamPrediction"]
