#!/usr/bin/env python3
"""A real gRPC server and client (grpcio, plaintext h2c) for tapwire's tests and demo.

Service `tapwire.demo.Greeter`, messages are protobuf with one string field (field 1), so
they decode schemalessly:
  - SayHello      unary            request "name"  -> reply "hello name"
  - CountUp       server streaming request "n"     -> replies "1" .. "n"
  - Collect       client streaming requests a,b,c  -> reply "a,b,c"
  - Chat          bidi streaming   request x       -> reply "echo x" for each
  - Fail          unary            always NOT_FOUND with message "no such thing"

  grpc_peer.py serve --port P
  grpc_peer.py call --port P [--count N]   runs every method N times, prints one JSON line
  grpc_peer.py hold --port P --seconds S   one channel, SayHello every 0.2 s for S seconds
                                           (a connection that outlives an agent's start)
"""
import argparse
import json
import sys
import time
from concurrent import futures

import grpc

SERVICE = "tapwire.demo.Greeter"


def encode(text: str) -> bytes:
    data = text.encode()
    out = bytearray(b"\x0a")
    n = len(data)
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            break
    return bytes(out) + data


def decode(msg: bytes) -> str:
    if not msg:
        return ""
    i, shift, n = 1, 0, 0
    while True:
        b = msg[i]
        n |= (b & 0x7F) << shift
        i += 1
        shift += 7
        if not b & 0x80:
            break
    return msg[i : i + n].decode()


def ident(x):
    return x


def say_hello(request, context):
    return encode("hello " + decode(request))


def count_up(request, context):
    for i in range(1, int(decode(request)) + 1):
        yield encode(str(i))


def collect(request_iterator, context):
    return encode(",".join(decode(r) for r in request_iterator))


def chat(request_iterator, context):
    for r in request_iterator:
        yield encode("echo " + decode(r))


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def serve(port: int) -> None:
    handlers = {
        "SayHello": grpc.unary_unary_rpc_method_handler(say_hello, ident, ident),
        "CountUp": grpc.unary_stream_rpc_method_handler(count_up, ident, ident),
        "Collect": grpc.stream_unary_rpc_method_handler(collect, ident, ident),
        "Chat": grpc.stream_stream_rpc_method_handler(chat, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"grpc_peer listening on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


def call(port: int, count: int) -> None:
    results = {"calls": 0, "unary": [], "server_stream": [], "client_stream": [], "bidi": [], "errors": []}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        m = lambda name: f"/{SERVICE}/{name}"
        for i in range(count):
            hello = channel.unary_unary(m("SayHello"), ident, ident)
            results["unary"].append(decode(hello(encode(f"world{i}"))))
            stream = channel.unary_stream(m("CountUp"), ident, ident)
            results["server_stream"].append([decode(x) for x in stream(encode("3"))])
            cs = channel.stream_unary(m("Collect"), ident, ident)
            results["client_stream"].append(decode(cs(iter([encode("a"), encode("b"), encode("c")]))))
            bidi = channel.stream_stream(m("Chat"), ident, ident)
            results["bidi"].append([decode(x) for x in bidi(iter([encode("x"), encode("y")]))])
            try:
                channel.unary_unary(m("Fail"), ident, ident)(encode("?"))
            except grpc.RpcError as e:
                results["errors"].append([e.code().value[0], e.details()])
            results["calls"] += 5
    print(json.dumps(results), flush=True)


def hold(port: int, seconds: float) -> None:
    calls = 0
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        hello = channel.unary_unary(f"/{SERVICE}/SayHello", ident, ident)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            hello(encode(f"late{calls}"))
            calls += 1
            time.sleep(0.2)
    print(json.dumps({"calls": calls}), flush=True)


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    c = sub.add_parser("call")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--count", type=int, default=1)
    c.add_argument("--interval", type=float, default=0.0)
    c.add_argument("--forever", action="store_true")
    h = sub.add_parser("hold")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--seconds", type=float, required=True)
    a = p.parse_args()
    if a.cmd == "serve":
        serve(a.port)
    elif a.cmd == "hold":
        hold(a.port, a.seconds)
    else:
        while True:
            call(a.port, a.count)
            if not a.forever:
                break
            time.sleep(a.interval or 2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
