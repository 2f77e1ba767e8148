#!/usr/bin/env python3
"""Records a TCP conversation through a relay on 127.0.0.1, for HTTP/2 and gRPC fixtures.

    h2_record.py LISTEN_PORT TARGET_PORT OUT_FILE -- CLIENT COMMAND...

Relays LISTEN_PORT -> 127.0.0.1:TARGET_PORT for the first connection, runs the client
command (which must connect to LISTEN_PORT), and writes every read, in the order the
relay saw them, as records: 1 byte direction (b'C' client->server, b'S' server->client),
4 bytes big-endian length, the bytes.
"""
import asyncio
import struct
import subprocess
import sys


async def main():
    listen, target, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    command = sys.argv[sys.argv.index("--") + 1:]
    records = []
    done = asyncio.Event()

    async def pump(reader, writer, tag):
        try:
            while data := await reader.read(65536):
                records.append((tag, data))
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def handle(c_reader, c_writer):
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pump(c_reader, s_writer, b"C"), pump(s_reader, c_writer, b"S"))
        done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    proc = await asyncio.create_subprocess_exec(*command)
    rc = await proc.wait()
    await asyncio.wait_for(done.wait(), 10)
    server.close()
    with open(out, "wb") as f:
        for tag, data in records:
            f.write(tag + struct.pack(">I", len(data)) + data)
    print(f"{out}: {len(records)} reads, client exit {rc}", file=sys.stderr)


asyncio.run(main())
