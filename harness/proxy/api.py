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

A request whose User-Agent starts with ``Mozilla/`` gets 403, Toxiproxy's guard against a
web page driving the API from a browser. Every error is ``{"error": ..., "status": ...}``,
rendered by ``render_error`` alone; nothing a client sends can take the server down.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from harness.proxy import gojson
from harness.proxy.errors import (
    METHOD_NOT_ALLOWED,
    MISSING_FIELD,
    ROUTE_NOT_FOUND,
    TOXIC_NOT_FOUND,
    USER_AGENT_NOT_ALLOWED,
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
Handler = Callable[["ProxyServer", list[str], bytes], Awaitable[web.Response]]


def render(data: object, status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.Response(status=status, body=gojson.dumps(data), content_type="application/json")


def render_error(error: ApiError) -> web.Response:
    """The one way an error leaves the server."""
    body = gojson.dumps({"error": error.message, "status": error.status}) + b"\n"
    return web.Response(status=error.status, body=body, content_type="application/json")


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

async def reset(server: ProxyServer, params: list[str], body: bytes) -> web.Response:
    server.reset()
    return no_content()


async def proxy_index(server: ProxyServer, params: list[str], body: bytes) -> web.Response:
    return render({name: server.proxies[name].to_json() for name in sorted(server.proxies)})


async def proxy_create(server: ProxyServer, params: list[str], body: bytes) -> web.Response:
    config = decode_proxy(gojson.decode(body), "Proxy", ProxyConfig("", "", "", True))
    if not config.name:
        raise MISSING_FIELD.joined("name")
    if not config.upstream:
        raise MISSING_FIELD.joined("upstream")
    return render(server.create(config).to_json(), status=201)


async def populate(server: ProxyServer, params: list[str], body: bytes) -> web.Response:
    try:
        proxies, error = server.populate(gojson.decode(body))
    except ApiError as exc:
        proxies, error = [], exc
    listed = [proxy.to_json() for proxy in proxies] or None   # Go's nil slice is null
    if error is None:
        return render({"proxies": listed}, status=201)
    return render({"error": error.message, "status": error.status, "proxies": listed},
                  status=error.status)


async def proxy_show(server: ProxyServer, params: list[str], body: bytes) -> web.Response:
    return render(server.get(params[0]).to_json())


async def proxy_update(server: ProxyServer, params: list[str], body: bytes) -> web.Response:
    proxy = server.get(params[0])
    current = ProxyConfig(proxy.name, proxy.listen, proxy.upstream, proxy.enabled)
    wanted = decode_proxy(gojson.decode(body), "Proxy", current)
    proxy.update(wanted.listen, wanted.upstream, wanted.enabled)
    return render(proxy.to_json())


async def proxy_delete(server: ProxyServer, params: list[str], body: bytes) -> web.Response:
    server.remove(params[0])
    return no_content()


async def toxic_index(server: ProxyServer, params: list[str], body: bytes) -> web.Response:
    return render([entry.to_json() for entry in server.get(params[0]).toxic_list()])


async def toxic_create(server: ProxyServer, params: list[str], body: bytes) -> web.Response:
    proxy = server.get(params[0])
    return render(proxy.add_toxic(gojson.decode(body)).to_json())


async def toxic_show(server: ProxyServer, params: list[str], body: bytes) -> web.Response:
    entry = server.get(params[0]).find_toxic(params[1])
    if entry is None:
        raise TOXIC_NOT_FOUND
    return render(entry.to_json())


async def toxic_update(server: ProxyServer, params: list[str], body: bytes) -> web.Response:
    proxy = server.get(params[0])
    if proxy.find_toxic(params[1]) is None:   # Go looks before it reads the body
        raise TOXIC_NOT_FOUND
    return render(proxy.update_toxic(params[1], gojson.decode(body)).to_json())


async def toxic_delete(server: ProxyServer, params: list[str], body: bytes) -> web.Response:
    server.get(params[0]).remove_toxic(params[1])
    return no_content()


async def connections(server: ProxyServer, params: list[str], body: bytes) -> web.Response:
    members = await server.connections(params[0])
    return render([entry for listed in members for entry in listed])


async def version(server: ProxyServer, params: list[str], body: bytes) -> web.Response:
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
            found = route(request.path)
            if found is None:
                raise ROUTE_NOT_FOUND
            handlers, params = found
            handler = handlers.get(request.method)
            if handler is None:
                raise METHOD_NOT_ALLOWED
            # Toxiproxy's middleware runs for matched routes only, as here.
            if request.headers.get("User-Agent", "").startswith("Mozilla/"):
                raise USER_AGENT_NOT_ALLOWED
            body = await request.read() if request.body_exists else b""
            request_read(request)
            return await handler(server, params, body)
        except ApiError as exc:
            return render_error(exc)
        except web.HTTPException as exc:
            return render_error(ApiError(exc.reason, exc.status))
        except Exception as exc:  # the API must answer, whatever happened
            log.exception("API request %s %s failed", request.method, request.path)
            return render_error(internal(str(exc) or type(exc).__name__))

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app
