#!/usr/bin/env python3
"""Records real HTTP/1 traffic for the parser tests.

A TCP relay on 127.0.0.1:LISTEN forwards to 127.0.0.1:UPSTREAM and writes every chunk
it relays, in order, to OUT: `# connection N` starts a connection, then one line per
chunk, `C <hex>` (client to server) or `S <hex>` (server to client). Point real clients
(curl) at the relay and real servers (nginx, python -m http.server) behind it.

usage: record.py LISTEN UPSTREAM OUT
"""
import asyncio
import sys

LISTEN, UPSTREAM, OUT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
counter = 0
log = open(OUT, "w", buffering=1)


async def pump(reader, writer, tag):
    while data := await reader.read(65536):
        log.write(f"{tag} {data.hex()}\n")
        writer.write(data)
        await writer.drain()
    writer.close()


async def handle(client_reader, client_writer):
    global counter
    counter += 1
    log.write(f"# connection {counter}\n")
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", UPSTREAM)
    await asyncio.gather(
        pump(client_reader, up_writer, "C"),
        pump(up_reader, client_writer, "S"),
        return_exceptions=True,
    )


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    async with server:
        await server.serve_forever()


asyncio.run(main())
