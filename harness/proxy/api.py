"""The HTTP API: Toxiproxy 2.12's routes, statuses and JSON, and one extension of ours.

Routes (as api.go declares them; POST on a proxy or a toxic is Toxiproxy's deprecated
spelling of PATCH and still works)::

    POST   /reset                             204, every proxy enabled, every toxic removed
    GET    /proxies                           200, name -> proxy (with its toxics)
    POST   /proxies                           201 created, 400, 409, 500 (cannot listen)
    POST   /populate                          201 {"proxies": [...]}, or the error and the
                                              proxies made before it
    GET    /proxies/{proxy}                   200, 404
    PATCH  /proxies/{proxy}                   200 (enabled / listen / upstream), 404
    DELETE /proxies/{proxy}                   204, 404
    GET    /proxies/{proxy}/toxics            200, [toxic]
    POST   /proxies/{proxy}/toxics            200 the toxic, 400, 404, 409
    GET    /proxies/{proxy}/toxics/{toxic}    200, 404
    PATCH  /proxies/{proxy}/toxics/{toxic}    200 (attributes merge, toxicity), 400, 404
    DELETE /proxies/{proxy}/toxics/{toxic}    204, 404
    GET    /version                           200 {"version": "2.12.0"}

Extension (ours, not Toxiproxy's; a real Toxiproxy answers 404)::

    GET    /proxies/{proxy}/connections       200, one entry per live connection:
           {"client", "listen", "upstream_local", "upstream", "bytes_upstream",
            "bytes_downstream", "state"}

With several data-plane processes (``--workers``) every request that changed something is
applied by every worker before its answer leaves (``ProxyServer.replicate``), and
``connections`` lists the connections of every process. The answers are the same.

Around the routes, what gorilla/mux (v1.8.1, Toxiproxy's router) and Go's ``net/http`` do:

- a path that is not clean (``//``, ``.``, ``..``, after percent-decoding) is a 301 to its
  cleaned form, whatever the method (``Router.ServeHTTP``, ``cleanPath``);
- a path no route has is 404 ``404 page not found`` in plain text (``http.NotFound``);
- a known path with another method (any token: ``FOO``, ``get``) is 405 with no body
  (mux's ``methodNotAllowed``);
- a matched route whose User-Agent starts with ``Mozilla/`` is 403 ``User agent not
  allowed`` in plain text (``stopBrowsersMiddleware``);
- every API error is ``{"error": ..., "status": ...}`` and a newline, sent by
  ``http.Error`` and so as ``text/plain; charset=utf-8`` (``apiError``), rendered here by
  ``render_error`` alone.

Bodies are read only by the handlers that decode one, where Go decodes it (a GET with a body,
or a PATCH of a proxy that does not exist, never reads it). Go has no size limit; we read
``BODY_LIMIT`` bytes, and decide from them whenever Go would have (its decoder stops at the
end of the first value or at the first syntax error): only a first value longer than the
limit is 413. Nothing a client sends can take the server down.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from harness.proxy import gojson
from harness.proxy.errors import (
    BAD_REQUEST_BODY,
    BODY_TOO_LARGE,
    MISSING_FIELD,
    TOXIC_NOT_FOUND,
    ApiError,
    internal,
)
from harness.proxy.proxy import ProxyConfig
from harness.proxy.site import answered, request_read

if TYPE_CHECKING:
    from harness.proxy.server import ProxyServer

log = logging.getLogger(__name__)
VERSION = "2.12.0"
EXTENSIONS = ("GET /proxies/{proxy}/connections",)
BODY_LIMIT = 8 * 1024 * 1024
"""Bytes of a request body the API reads (Go reads as much as its decoder wants)."""
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class Body:
    """A request's body, read when (and if) a handler decodes it, as Go's handlers do."""

    def __init__(self, request: web.Request) -> None:
        self.request = request

    async def decode(self) -> object:
        """The body's first JSON value, as ``gojson.decode``; BODY_TOO_LARGE when what Go
        would answer depends on bytes past ``BODY_LIMIT``."""
        content, chunks, size = self.request.content, [], 0
        try:
            while size <= BODY_LIMIT:
                chunk = await content.read(BODY_LIMIT + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except (ConnectionError, RequestPayloadError):
            # the client went (or was dropped by the read deadline) mid-body; Go's decoder
            # reports the short read, to no one
            raise BAD_REQUEST_BODY.joined("unexpected EOF") from None
        request_read(self.request)
        data = b"".join(chunks)
        try:
            return gojson.decode(data[:BODY_LIMIT], complete=size <= BODY_LIMIT)
        except gojson.TooLarge:
            raise BODY_TOO_LARGE() from None


Handler = Callable[["ProxyServer", list[str], Body], Awaitable[web.Response]]


def render(data: object, status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.Response(status=status, body=gojson.dumps(data), content_type="application/json")


def plain_error(text: str, status: int) -> web.Response:
    """Go's ``http.Error``: the text and a newline, as plain text."""
    return web.Response(status=status, body=text.encode() + b"\n", headers={
        "Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"})


def render_error(error: ApiError) -> web.Response:
    """The one way an API error leaves the server: api.go, ``apiError``, which hands the
    JSON to ``http.Error`` (hence plain text, and the newline)."""
    return plain_error(gojson.dumps({"error": error.message, "status": error.status}).decode(),
                       error.status)


def clean_path(path: str) -> str:
    """gorilla/mux's ``cleanPath``: ``path.Clean``, keeping a trailing slash."""
    if not path:
        return "/"
    if not path.startswith("/"):
        path = "/" + path
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):   # POSIX keeps a leading "//"; Go's path.Clean does not
        cleaned = "/" + cleaned.lstrip("/")
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def redirect(request: web.Request, path: str) -> web.Response:
    """mux's answer to a path that is not clean: 301 to the cleaned one, query kept."""
    location = quote(path, safe="/$&+,:;=@~")
    if request.query_string:
        location += "?" + request.query_string
    return web.Response(status=301, headers={"Location": location})


def no_content() -> web.Response:
    """204."""
    return web.Response(status=204)


def decode_proxy(value: object, where: str, defaults: ProxyConfig) -> ProxyConfig:
    """A proxy object from the API, over ``defaults`` (Go decodes onto a prefilled struct)."""
    obj = gojson.object_of(value, "toxiproxy.Proxy")
    return ProxyConfig(name=gojson.string(obj, "name", where, defaults.name),
                       listen=gojson.string(obj, "listen", where, defaults.listen),
                       upstream=gojson.string(obj, "upstream", where, defaults.upstream),
                       enabled=gojson.boolean(obj, "enabled", where, defaults.enabled))


# Handlers, in api.go's order ---------------------------------------------------------------

async def reset(server: ProxyServer, params: list[str], body: Body) -> web.Response:
    server.reset()
    return no_content()


async def proxy_index(server: ProxyServer, params: list[str], body: Body) -> web.Response:
    return render({name: server.proxies[name].to_json() for name in sorted(server.proxies)})


async def proxy_create(server: ProxyServer, params: list[str], body: Body) -> web.Response:
    config = decode_proxy(await body.decode(), "Proxy", ProxyConfig("", "", "", True))
    if not config.name:
        raise MISSING_FIELD.joined("name")
    if not config.upstream:
        raise MISSING_FIELD.joined("upstream")
    return render(server.create(config).to_json(), status=201)


async def populate(server: ProxyServer, params: list[str], body: Body) -> web.Response:
    try:
        proxies, error = server.populate(await body.decode())
    except ApiError as exc:
        proxies, error = [], exc
    listed = [proxy.to_json() for proxy in proxies] or None   # Go's nil slice is null
    if error is None:
        return render({"proxies": listed}, status=201)
    return render({"error": error.message, "status": error.status, "proxies": listed},
                  status=error.status)


async def proxy_show(server: ProxyServer, params: list[str], body: Body) -> web.Response:
    return render(server.get(params[0]).to_json())


async def proxy_update(server: ProxyServer, params: list[str], body: Body) -> web.Response:
    proxy = server.get(params[0])
    current = ProxyConfig(proxy.name, proxy.listen, proxy.upstream, proxy.enabled)
    wanted = decode_proxy(await body.decode(), "Proxy", current)
    proxy.update(wanted.listen, wanted.upstream, wanted.enabled)
    return render(proxy.to_json())


async def proxy_delete(server: ProxyServer, params: list[str], body: Body) -> web.Response:
    server.remove(params[0])
    return no_content()


async def toxic_index(server: ProxyServer, params: list[str], body: Body) -> web.Response:
    return render([entry.to_json() for entry in server.get(params[0]).toxic_list()])


async def toxic_create(server: ProxyServer, params: list[str], body: Body) -> web.Response:
    proxy = server.get(params[0])
    return render(proxy.add_toxic(await body.decode()).to_json())


async def toxic_show(server: ProxyServer, params: list[str], body: Body) -> web.Response:
    entry = server.get(params[0]).find_toxic(params[1])
    if entry is None:
        raise TOXIC_NOT_FOUND()
    return render(entry.to_json())


async def toxic_update(server: ProxyServer, params: list[str], body: Body) -> web.Response:
    proxy = server.get(params[0])
    if proxy.find_toxic(params[1]) is None:   # Go looks before it reads the body
        raise TOXIC_NOT_FOUND()
    return render(proxy.update_toxic(params[1], await body.decode()).to_json())


async def toxic_delete(server: ProxyServer, params: list[str], body: Body) -> web.Response:
    server.get(params[0]).remove_toxic(params[1])
    return no_content()


async def connections(server: ProxyServer, params: list[str], body: Body) -> web.Response:
    members = await server.connections(params[0])
    return render([entry for listed in members for entry in listed])


async def version(server: ProxyServer, params: list[str], body: Body) -> web.Response:
    text = f'{{"version": "{VERSION}"}}\n'
    return web.Response(body=text.encode(), headers={
        "Content-Type": "application/json;charset=utf-8"})


# Routing -------------------------------------------------------------------------------

ROUTES: list[tuple[tuple[str | None, ...], dict[str, Handler]]] = [
    (("reset",), {"POST": reset}),
    (("proxies",), {"GET": proxy_index, "POST": proxy_create}),
    (("populate",), {"POST": populate}),
    (("proxies", None), {"GET": proxy_show, "POST": proxy_update, "PATCH": proxy_update,
                         "DELETE": proxy_delete}),
    (("proxies", None, "toxics"), {"GET": toxic_index, "POST": toxic_create}),
    (("proxies", None, "toxics", None), {"GET": toxic_show, "POST": toxic_update,
                                         "PATCH": toxic_update, "DELETE": toxic_delete}),
    (("proxies", None, "connections"), {"GET": connections}),
    (("version",), {"GET": version}),
]


def route(path: str) -> tuple[dict[str, Handler], list[str]] | None:
    """The handlers for ``path`` and the values of its ``{...}`` segments."""
    if not path.startswith("/"):
        return None
    parts = path[1:].split("/")
    for pattern, handlers in ROUTES:
        if len(pattern) != len(parts):
            continue
        params: list[str] = []
        for want, got in zip(pattern, parts, strict=True):
            if want is None:
                if not got:
                    break
                params.append(got)
            elif want != got:
                break
        else:
            return handlers, params
    return None


def build_app(server: ProxyServer) -> web.Application:
    """The aiohttp application serving ``server``'s API."""

    async def dispatch(request: web.Request) -> web.StreamResponse:
        try:
            response = await answer(request)
            # Whatever the request changed, even if it then failed half-way, is live in every
            # process before the client hears back.
            await server.replicate()
            return response
        finally:
            answered(request)

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            path = request.path
            if _BAD_ESCAPE.search(request.raw_path.partition("?")[0]):
                # net/http cannot parse the request line (url.ParseRequestURI)
                request_read(request)
                return web.Response(status=400, text="400 Bad Request",
                                    headers={"Connection": "close"})
            cleaned = clean_path(path)
            if cleaned != path:
                request_read(request)
                return redirect(request, cleaned)
            found = route(path)
            if found is None:
                request_read(request)
                return plain_error("404 page not found", 404)
            handlers, params = found
            handler = handlers.get(request.method)
            if handler is None:
                request_read(request)
                return web.Response(status=405)
            # Toxiproxy's middleware runs for matched routes only, as here.
            if request.headers.get("User-Agent", "").startswith("Mozilla/"):
                request_read(request)
                return plain_error("User agent not allowed", 403)
            if not request.body_exists:
                request_read(request)
            return await handler(server, params, Body(request))
        except ApiError as exc:
            return render_error(exc)
        except web.HTTPException as exc:
            return render_error(ApiError(exc.reason, exc.status))
        except Exception as exc:  # the API must answer, whatever happened
            log.exception("API request %s %s failed", request.method, request.path)
            return render_error(internal(str(exc) or type(exc).__name__))
        finally:
            request_read(request)   # a body no handler read is not waited for

    app = web.Application(client_max_size=BODY_LIMIT)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app
