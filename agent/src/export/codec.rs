//! A gRPC codec for `Ingest/Push` that sends batches exactly as the spool holds them
//! (already-encoded `Batch` messages) and decodes `Ack`s: a batch is encoded once, when it
//! closes, however often it is resent.

use bytes::{BufMut, Bytes};
use prost::Message;
use tapwire_proto::v1::Ack;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Encodes pre-encoded `Batch` bytes, decodes `Ack`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EncodedBatchCodec;

impl Codec for EncodedBatchCodec {
    type Encode = Bytes;
    type Decode = Ack;
    type Encoder = EncodedBatchEncoder;
    type Decoder = AckDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedBatchEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        AckDecoder
    }
}

/// Copies the encoded batch into the frame.
#[derive(Debug)]
pub(crate) struct EncodedBatchEncoder;

impl Encoder for EncodedBatchEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

/// Decodes one `Ack`.
#[derive(Debug)]
pub(crate) struct AckDecoder;

impl Decoder for AckDecoder {
    type Item = Ack;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Ack>, Status> {
        Ack::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("collector sent an undecodable Ack: {e}")))
    }
}
