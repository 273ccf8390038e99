"""``service: haproxy``: HAProxy in TCP mode in front of another target (see ``target``)."""

from harness.targets.base import Upstream, UpstreamPrediction
from harness.targets.haproxy.config import check_settings, find_haproxy, require_haproxy
from harness.targets.haproxy.target import HaproxyTarget

__all__ = ["HaproxyTarget", "Upstream", "UpstreamPrediction", "check_settings", "find_haproxy",
           "require_haproxy"]
