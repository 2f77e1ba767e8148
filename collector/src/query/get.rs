//! `GetPair`: one pair from the payload store, found through its index row, optionally with
//! bodies decoded and gRPC messages as JSON.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tapwire_proto::v1::{DecodedBody, GetPairRequest, GetPairResponse, Message, Pair};
use uuid::Uuid;

use super::body_decode::{decode_body, decode_one};
use super::error::QueryError;
use super::grpc_json::Schemas;
use super::summary::SegmentRef;
use crate::storage::Stores;

/// How far around the UUIDv7's millisecond the index row's `time` is looked for first.
const ID_TIME_SLACK: Duration = Duration::from_secs(60);

/// Finds where the pair `id` is stored, and the `remote_service` ingest computed for it.
pub async fn locate(stores: &Stores, id: &str) -> Result<(SegmentRef, String), QueryError> {
    let uuid = Uuid::parse_str(id.trim())
        .map_err(|e| QueryError::BadRequest(format!("id {id:?} is not a UUID ({e})")))?;
    let client = stores.db.get().await?;
    let read = |row: &tokio_postgres::Row| -> Result<(SegmentRef, String), QueryError> {
        let at = SegmentRef {
            key: row.try_get(0)?,
            offset: row.try_get::<_, i64>(1)?.max(0) as u64,
            length: row.try_get::<_, i32>(2)?.max(0) as u32,
        };
        Ok((at, row.try_get(3)?))
    };
    // A UUIDv7 carries its millisecond: look there first so only one chunk is searched.
    if let Some(ts) = uuid.get_timestamp() {
        let (secs, nanos) = ts.to_unix();
        let at = UNIX_EPOCH + Duration::new(secs, nanos);
        let (from, to) = (
            at - ID_TIME_SLACK.min(at.duration_since(UNIX_EPOCH).unwrap_or_default()),
            at + ID_TIME_SLACK,
        );
        let statement = client
            .prepare_cached(
                "SELECT segment_key, segment_offset, segment_length, remote_service FROM rr_pairs \
                 WHERE id = $1 AND time >= $2 AND time <= $3 LIMIT 1",
            )
            .await?;
        if let Some(row) = client.query_opt(&statement, &[&uuid, &from, &to]).await? {
            return read(&row);
        }
    }
    // Ids not made from the pair's start time: the `id` index alone.
    let statement = client
        .prepare_cached(
            "SELECT segment_key, segment_offset, segment_length, remote_service FROM rr_pairs \
             WHERE id = $1 LIMIT 1",
        )
        .await?;
    match client.query_opt(&statement, &[&uuid]).await? {
        Some(row) => read(&row),
        None => Err(QueryError::UnknownId(id.to_owned())),
    }
}

/// Reads the full pair at `at`, with the `remote_service` of its index row: the agent
/// rarely knows the peer, ingest computes it (`ingest::peers`) after the payload was packed.
pub async fn read_pair(
    stores: &Stores,
    at: &SegmentRef,
    remote_service: String,
) -> Result<Pair, QueryError> {
    let mut pair = stores
        .payloads
        .read_pair(&at.key, at.offset, at.length)
        .await
        .map_err(|e| {
            QueryError::Payload(format!("{} at {}+{}: {e}", at.key, at.offset, at.length))
        })?;
    if !remote_service.is_empty() {
        pair.remote_service = remote_service;
    }
    Ok(pair)
}

/// Answers `GetPair`.
pub async fn get_pair(
    stores: &Stores,
    schemas: &Schemas,
    request: &GetPairRequest,
) -> Result<GetPairResponse, QueryError> {
    let (at, remote_service) = locate(stores, &request.id).await?;
    let pair = read_pair(stores, &at, remote_service).await?;
    if !request.decode {
        return Ok(GetPairResponse {
            pair: Some(pair),
            ..Default::default()
        });
    }
    let request_body = pair.request.as_ref().map(decoded_body);
    let response_body = pair.response.as_ref().map(decoded_body);
    let messages_json = messages_json(&pair, schemas)
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    Ok(GetPairResponse {
        pair: Some(pair),
        request_body,
        response_body,
        messages_json,
    })
}

fn decoded_body(message: &Message) -> DecodedBody {
    let d = decode_body(
        &message.body,
        &message.content_encoding,
        message.body_truncated,
    );
    DecodedBody {
        data: d.data.into(),
        error: d.error,
    }
}

/// The pair's stream messages as JSON values, in order: gRPC messages decompressed and decoded
/// (named by a registered schema or by field number), WebSocket text as strings.
pub fn messages_json(pair: &Pair, schemas: &Schemas) -> Vec<Value> {
    let encoding = |from_client: bool| {
        let side = if from_client {
            &pair.request
        } else {
            &pair.response
        };
        side.as_ref()
            .map(|m| m.content_encoding.clone())
            .unwrap_or_default()
    };
    pair.messages
        .iter()
        .map(|m| {
            if pair.protocol != "grpc" {
                return match std::str::from_utf8(&m.data) {
                    Ok(text) if m.kind != "binary" => Value::String(text.to_owned()),
                    _ => serde_json::json!({ "_bytes": STANDARD.encode(&m.data) }),
                };
            }
            let data = if m.compressed {
                match decode_one(&m.data, &encoding(m.from_client)) {
                    Ok(data) => data,
                    Err((_, why)) => {
                        return serde_json::json!({
                            "_error": format!("message not decompressed: {why}"),
                            "_bytes": STANDARD.encode(&m.data),
                        });
                    }
                }
            } else {
                m.data.to_vec()
            };
            if m.truncated {
                return serde_json::json!({
                    "_error": "message truncated by the capture",
                    "_bytes": STANDARD.encode(&data),
                });
            }
            schemas.message_json(&pair.path, m.from_client, &data)
        })
        .collect()
}
