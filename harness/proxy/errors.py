"""The errors of the proxy's API: values that carry their HTTP status, as Toxiproxy's do.

Toxiproxy (api.go) declares a handful of ``ApiError`` values and joins details onto them
(``missing required field: name``). The same texts and statuses live here, as templates:
``raise PROXY_NOT_FOUND()`` raises a copy (see ``ApiError.__call__``); ``api.render_error``
is the one function that turns any of them into a response. Anything else that goes wrong
while serving a request (a listener that cannot bind) becomes a 500 carrying the error's own
text, as Toxiproxy's ``apiError`` does for errors without a status.

``WorkerError`` is not an API error: a worker process of a multi-process server
(``--workers``) that could not start, or stopped answering.
"""

from __future__ import annotations

from harness.errors import ConnchaosError


class ApiError(ConnchaosError):
    """An API failure: ``message`` for the ``error`` field, ``status`` for the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        self.message = message
        self.status = status
        super().__init__(message)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"ApiError({self.message!r}, {self.status})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiError) and (other.message, other.status) == (
            self.message, self.status)

    def __hash__(self) -> int:
        return hash((self.message, self.status))

    def __call__(self) -> ApiError:
        """A fresh copy, to raise: raising one instance again and again makes it keep every
        traceback (and so every frame, request and body on it) it was ever raised through."""
        return ApiError(self.message, self.status)

    def joined(self, detail: object) -> ApiError:
        """This error with ``: detail`` appended, as Toxiproxy's ``joinError`` does."""
        return ApiError(f"{self.message}: {detail}", self.status)


BAD_REQUEST_BODY = ApiError("bad request body", 400)
MISSING_FIELD = ApiError("missing required field", 400)
PROXY_NOT_FOUND = ApiError("proxy not found", 404)
PROXY_ALREADY_EXISTS = ApiError("proxy already exists", 409)
INVALID_STREAM = ApiError("stream was invalid, can be either upstream or downstream", 400)
INVALID_TOXIC_TYPE = ApiError("invalid toxic type", 400)
TOXIC_ALREADY_EXISTS = ApiError("toxic already exists", 409)
TOXIC_NOT_FOUND = ApiError("toxic not found", 404)
BODY_TOO_LARGE = ApiError("bad request body: the first JSON value is longer than the "
                          "8 MiB the API reads", 413)   # ours: Go has no limit


def internal(message: str) -> ApiError:
    """An error without a status of its own: Toxiproxy answers those with 500."""
    return ApiError(message, 500)


class WorkerError(ConnchaosError):
    """A worker process of a multi-process server (``--workers``) could not be started or
    stopped answering: which member, its pid (None if it never ran) and what happened."""

    def __init__(self, member: int, pid: int | None, detail: str) -> None:
        self.member = member
        self.pid = pid
        self.detail = detail
        super().__init__(str(self))

    def __str__(self) -> str:
        who = f"worker {self.member}" + (f" (pid {self.pid})" if self.pid is not None else "")
        return f"{who}: {self.detail}"
