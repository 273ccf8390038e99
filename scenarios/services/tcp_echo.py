"""A plain TCP echo service, standing in for "your own service" in scenarios/tcp-raw-service.yaml.

It sets TCP keepalive on every accepted connection with the given idle, interval and count
(what a well-configured service of your own would do); the scenario declares the same values
under `settings` so that connchaos can predict the reclaim. Standard library only.
"""

import argparse
import asyncio
import socket


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args: argparse.Namespace) -> None:
    sock = writer.get_extra_info("socket")
    if args.keepalive_idle:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, args.keepalive_idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, args.keepalive_interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, args.keepalive_count)
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass  # the peer is gone (timed out or reset): the connection is over
    finally:
        writer.close()


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--keepalive-idle", type=int, default=0)
    p.add_argument("--keepalive-interval", type=int, default=1)
    p.add_argument("--keepalive-count", type=int, default=3)
    args = p.parse_args()
    server = await asyncio.start_server(lambda r, w: echo(r, w, args), args.host, args.port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
