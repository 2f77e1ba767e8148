//! gRPC messages as JSON: by field number when no schema is known ("schemaless"), with field
//! names when a registered FileDescriptorSet describes the called method.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde_json::{Map, Value};

use super::error::QueryError;

/// Nesting deeper than this is shown as bytes (bounds recursion on hostile input).
const MAX_DEPTH: usize = 32;

/// Message schemas registered by the operator (FileDescriptorSets), by gRPC method.
#[derive(Debug, Clone, Default)]
pub struct Schemas {
    pool: Option<DescriptorPool>,
}

impl Schemas {
    /// Adds the files of an encoded `FileDescriptorSet` (as written by `protoc
    /// --descriptor_set_out --include_imports` or `buf build -o`).
    pub fn register(&mut self, descriptor_set: &[u8]) -> Result<(), QueryError> {
        let mut pool = self.pool.take().unwrap_or_default();
        let result = pool
            .decode_file_descriptor_set(descriptor_set)
            .map_err(|e| QueryError::DescriptorSet(e.to_string()));
        self.pool = Some(pool);
        result
    }

    /// The request (`from_client`) or response type of the gRPC method at `path`
    /// (`/pkg.Service/Method`), when registered.
    fn message_type(&self, path: &str, from_client: bool) -> Option<MessageDescriptor> {
        let pool = self.pool.as_ref()?;
        let (service, method) = path.trim_start_matches('/').split_once('/')?;
        let method = pool
            .get_service_by_name(service)?
            .methods()
            .find(|m| m.name() == method)?;
        Some(if from_client {
            method.input()
        } else {
            method.output()
        })
    }

    /// One gRPC message (already decompressed) as JSON: named fields when the method's
    /// schema is registered and the message matches it, else by field number.
    pub fn message_json(&self, path: &str, from_client: bool, data: &[u8]) -> Value {
        if let Some(descriptor) = self.message_type(path, from_client)
            && let Ok(message) = DynamicMessage::decode(descriptor, data)
            && let Ok(value) = serde_json::to_value(&message)
        {
            return value;
        }
        schemaless_json(data)
    }
}

/// A protobuf message decoded without its schema: an object keyed by field number, repeated
/// fields as arrays. Bytes that are not a message become `{"_bytes": base64}`.
pub fn schemaless_json(data: &[u8]) -> Value {
    match parse_message(data, 0) {
        Some(fields) => Value::Object(fields),
        None => bytes_value(data),
    }
}

fn bytes_value(data: &[u8]) -> Value {
    let mut m = Map::new();
    m.insert("_bytes".into(), Value::String(STANDARD.encode(data)));
    Value::Object(m)
}

fn read_varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *data.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn take<'a>(data: &'a [u8], pos: &mut usize, n: usize) -> Option<&'a [u8]> {
    let end = pos.checked_add(n)?;
    let slice = data.get(*pos..end)?;
    *pos = end;
    Some(slice)
}

/// Parses a whole message; `None` when the bytes are not one.
fn parse_message(data: &[u8], depth: usize) -> Option<Map<String, Value>> {
    let mut pos = 0;
    let fields = parse_fields(data, &mut pos, depth, None)?;
    (pos == data.len()).then_some(fields)
}

/// Parses fields until the end of `data`, or until the end-group tag of `group` when inside a
/// group.
fn parse_fields(
    data: &[u8],
    pos: &mut usize,
    depth: usize,
    group: Option<u64>,
) -> Option<Map<String, Value>> {
    let mut fields = Map::new();
    while *pos < data.len() {
        let tag = read_varint(data, pos)?;
        let (number, wire) = (tag >> 3, tag & 7);
        if number == 0 || number > (1 << 29) - 1 {
            return None;
        }
        let value = match wire {
            0 => Value::from(read_varint(data, pos)?),
            1 => {
                let b = take(data, pos, 8)?;
                Value::from(u64::from_le_bytes(b.try_into().ok()?))
            }
            2 => {
                let len = usize::try_from(read_varint(data, pos)?).ok()?;
                length_delimited(take(data, pos, len)?, depth)
            }
            3 if depth < MAX_DEPTH => {
                Value::Object(parse_fields(data, pos, depth + 1, Some(number))?)
            }
            4 => {
                return (group == Some(number)).then_some(fields);
            }
            5 => {
                let b = take(data, pos, 4)?;
                Value::from(u32::from_le_bytes(b.try_into().ok()?))
            }
            _ => return None,
        };
        let key = number.to_string();
        match fields.get_mut(&key) {
            Some(Value::Array(items)) => items.push(value),
            Some(first) => {
                let first = first.take();
                fields.insert(key, Value::Array(vec![first, value]));
            }
            None => {
                fields.insert(key, value);
            }
        }
    }
    // Inside a group the end-group tag is required.
    group.is_none().then_some(fields)
}

/// A length-delimited field: readable text, else a nested message, else bytes.
fn length_delimited(bytes: &[u8], depth: usize) -> Value {
    if let Ok(text) = std::str::from_utf8(bytes)
        && text
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
    {
        return Value::String(text.to_owned());
    }
    if depth < MAX_DEPTH
        && let Some(fields) = parse_message(bytes, depth + 1)
    {
        return Value::Object(fields);
    }
    bytes_value(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn fields_by_number() {
        // A real protobuf message: a Header {name: "a", value: "b"} nested in a Message.
        let msg = tapwire_proto::v1::Message {
            headers: vec![
                tapwire_proto::v1::Header {
                    name: "content-type".into(),
                    value: "x".into(),
                },
                tapwire_proto::v1::Header {
                    name: "te".into(),
                    value: "trailers".into(),
                },
            ],
            body_size: 300,
            body: vec![0xff, 0x00, 0x01].into(),
            ..Default::default()
        };
        let json = schemaless_json(&msg.encode_to_vec());
        assert_eq!(json["1"][0]["1"], "content-type");
        assert_eq!(json["1"][1]["2"], "trailers");
        assert_eq!(json["3"], 300);
        assert_eq!(json["2"]["_bytes"], "/wAB");
    }

    #[test]
    fn named_fields_with_a_registered_schema() {
        let mut schemas = Schemas::default();
        schemas
            .register(tapwire_proto::v1::FILE_DESCRIPTOR_SET)
            .unwrap();
        let req = tapwire_proto::v1::GetPairRequest {
            id: "abc".into(),
            decode: true,
        };
        let json = schemas.message_json("/tapwire.v1.Query/GetPair", true, &req.encode_to_vec());
        assert_eq!(json["id"], "abc");
        assert_eq!(json["decode"], true);
        // An unknown method falls back to numbers.
        let json = schemas.message_json("/x.Y/Z", true, &req.encode_to_vec());
        assert_eq!(json["1"], "abc");
        assert!(schemas.register(b"\xff\xff").is_err());
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut seed = 0x1234_5678u32;
        for len in 0..400 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = schemaless_json(&data);
        }
        // Deep nesting stops at the depth limit.
        let mut deep = vec![];
        for _ in 0..200 {
            let mut outer = vec![0x0a];
            prost::encoding::encode_varint(deep.len() as u64, &mut outer);
            outer.extend_from_slice(&deep);
            deep = outer;
        }
        let _ = schemaless_json(&deep);
    }
}
