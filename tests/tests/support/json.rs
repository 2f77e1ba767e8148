//! Reading the CLI's proto3 JSON: default values are omitted and 64-bit integers are
//! strings, so every accessor treats "absent" as the default and accepts both forms.

#![allow(dead_code)]

use serde_json::Value;

pub fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

pub fn number(v: &Value, key: &str) -> u64 {
    match v.get(key) {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

pub fn optional_number(v: &Value, key: &str) -> Option<u64> {
    v.get(key).map(|_| number(v, key))
}
