"""``service: redis``: Debian's redis-server, its clients held open as redis-py connections.

``config`` reads and checks the redis.conf directives (with redis-server itself), ``target``
runs it; the arithmetic of its keepalive and idle timeout is ``harness.core.redis``.
"""

from harness.targets.redis.target import RedisTarget

__all__ = ["RedisTarget"]
