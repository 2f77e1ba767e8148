"""Moves known bytes over one loopback TCP connection with each socket call the agent
hooks: write/read, send/recv (sendto/recvfrom), sendmsg/recvmsg and writev/readv, with
vectors that have empty segments, receive buffers larger than what arrives, and one
writev of more segments than the kernel programs walk.

Usage: socket_calls.py PORT. Waits for a line on stdin before it connects (the agent
is started in between), then prints one JSON object: the pid and the bytes each side
sent, in order, in base64.
"""

import base64
import json
import os
import socket
import sys


def receive_exactly(size, call):
    """Calls `call(room)` until `size` bytes arrived; returns them."""
    got = b""
    while len(got) < size:
        part = call(size - len(got))
        if not part:
            raise SystemExit("connection closed early")
        got += part
    return got


def recvmsg_into_two(sock):
    """recvmsg into a 7-byte and a 4096-byte buffer: returns what arrived."""
    def call(room):
        first, second = bytearray(7), bytearray(4096)
        n, _, _, _ = sock.recvmsg_into([first, second])
        return bytes((first + second)[:n])
    return call


def readv_into_two(fd):
    """readv into a 5-byte and a 4096-byte buffer: returns what arrived."""
    def call(room):
        first, second = bytearray(5), bytearray(4096)
        n = os.readv(fd, [first, second])
        return bytes((first + second)[:n])
    return call


def main():
    port = int(sys.argv[1])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1)
    print("listening", flush=True)
    sys.stdin.readline()
    client = socket.create_connection(("127.0.0.1", port))
    server, _ = listener.accept()
    sent = {"client": b"", "server": b""}

    def step(side, data, send, receiver_call):
        send(data)
        sent[side] += data
        got = receive_exactly(len(data), receiver_call)
        if got != data:
            raise SystemExit(f"{side}: received {got!r}, sent {data!r}")

    c, s = client.fileno(), server.fileno()
    step("client", b"write->read;", lambda d: os.write(c, d), lambda n: os.read(s, n))
    step("server", b"send->recv;", server.send, client.recv)
    step("client", b"sendto->recvfrom;", lambda d: client.sendto(d, ("127.0.0.1", port)),
         lambda n: server.recvfrom(n)[0])
    parts = [b"sendmsg:", b"", b"one", b"|two|", b"", b"three;"]
    step("client", b"".join(parts), lambda d: client.sendmsg(parts), recvmsg_into_two(server))
    parts = [b"writev:", b"alpha", b"", b"|beta|gamma;"]
    step("server", b"".join(parts), lambda d: os.writev(s, parts), readv_into_two(c))
    parts = [b"sendmsg-back:", b"x" * 300, b";"]
    step("server", b"".join(parts), lambda d: server.sendmsg(parts),
         lambda n: client.recvmsg(n)[0])
    # More segments than the programs walk: the tail may go uncaptured, but only as
    # a counted gap.
    parts = [b"%02d-segment;" % i for i in range(40)]
    step("server", b"".join(parts), lambda d: os.writev(s, parts), readv_into_two(c))
    step("client", b"readv-tail:" + b"y" * 2000 + b";", lambda d: os.write(c, d),
         readv_into_two(s))
    client.close()
    server.close()
    listener.close()
    print(json.dumps({
        "pid": os.getpid(),
        "client": base64.b64encode(sent["client"]).decode(),
        "server": base64.b64encode(sent["server"]).decode(),
    }), flush=True)


main()
