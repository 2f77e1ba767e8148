#!/usr/bin/env python3
"""A grpcio server and client for the gRPC fixtures (no generated code: raw bytes).

    grpc_demo.py serve PORT          # runs the demo.Echo service until killed
    grpc_demo.py calls PORT          # one call of each kind (see below)
    grpc_demo.py unary PORT N        # N unary calls on one channel
"""
import sys
from concurrent import futures

import grpc

ident = lambda b: b  # noqa: E731


def unary(request, context):
    return b"echo:" + request


def server_stream(request, context):
    for i in range(3):
        yield b"part-%d:" % i + request


def client_stream(requests, context):
    return b"|".join(requests)


def bidi(requests, context):
    for r in requests:
        yield b"re:" + r


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such item: 42 \u2717")


def serve(port):
    handler = grpc.method_handlers_generic_handler("demo.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, ident, ident),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, ident, ident),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
    })
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def channel(port):
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)])


def calls(port):
    with channel(port) as ch:
        u = ch.unary_unary("/demo.Echo/Unary", ident, ident)
        assert u(b"hello") == b"echo:hello"
        assert u(b"z" * 300, compression=grpc.Compression.Gzip) == b"echo:" + b"z" * 300
        ss = ch.unary_stream("/demo.Echo/ServerStream", ident, ident)
        assert list(ss(b"q")) == [b"part-0:q", b"part-1:q", b"part-2:q"]
        cs = ch.stream_unary("/demo.Echo/ClientStream", ident, ident)
        assert cs(iter([b"a", b"b", b"c"])) == b"a|b|c"
        bd = ch.stream_stream("/demo.Echo/Bidi", ident, ident)
        assert list(bd(iter([b"x", b"y"]))) == [b"re:x", b"re:y"]
        f = ch.unary_unary("/demo.Echo/Fail", ident, ident)
        try:
            f(b"42")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND


def many(port, n):
    with channel(port) as ch:
        u = ch.unary_unary("/demo.Echo/Unary", ident, ident)
        for i in range(n):
            u(b"req-%d" % i)


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    {"serve": lambda: serve(port), "calls": lambda: calls(port),
     "unary": lambda: many(port, int(sys.argv[3]))}[mode]()
