//! Protocol parsers: a connection's two ordered byte streams in, request/response
//! [`Pair`](tapwire_proto::v1::Pair)s out. Nothing here touches the kernel, so all of it is
//! tested and fuzzed on recorded streams.
