#!/usr/bin/env python3
"""A real WebSocket server and client (the `websockets` library) for tapwire's tests: the
client sends "ping-1" … "ping-N" as text frames, the server answers "pong-…" to each.

  ws_peer.py serve --port P
  ws_peer.py call --port P [--count N]   prints the replies as one JSON line
"""
import argparse
import asyncio
import json
import sys

import websockets


async def echo(ws):
    async for msg in ws:
        await ws.send(msg.replace("ping", "pong"))


async def serve(port: int) -> None:
    # No per-message compression: frames stay readable on the wire.
    async with websockets.serve(echo, "127.0.0.1", port, compression=None):
        await asyncio.Future()


async def call(port: int, count: int) -> None:
    replies = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/chat", compression=None) as ws:
        for i in range(1, count + 1):
            await ws.send(f"ping-{i}")
            replies.append(await ws.recv())
    print(json.dumps(replies), flush=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["serve", "call"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=3)
    a = p.parse_args()
    asyncio.run(serve(a.port) if a.mode == "serve" else call(a.port, a.count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
