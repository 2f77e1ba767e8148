//! Turns the filter flags into the API's `Filter`.

use std::time::SystemTime;

use anyhow::{Result, bail};
use tapwire_proto::v1::{Direction, Filter};

use crate::args::{DirectionArg, FilterArgs};
use crate::timespec::{parse_time, timestamp};

/// The `Filter` the flags describe; times relative to `now`.
pub fn to_filter(args: &FilterArgs, now: SystemTime) -> Result<Filter> {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let (status, status_class) = match args.status.as_deref().map(str::trim) {
        None | Some("") => (0, 0),
        Some(s) => parse_status(s)?,
    };
    Ok(Filter {
        start: args
            .since
            .as_deref()
            .map(|s| parse_time(s, now))
            .transpose()?
            .map(timestamp),
        end: args
            .until
            .as_deref()
            .map(|s| parse_time(s, now))
            .transpose()?
            .map(timestamp),
        node: text(&args.node),
        namespace: text(&args.namespace),
        service: text(&args.service),
        pod: text(&args.pod),
        direction: match args.direction {
            None => Direction::Any,
            Some(DirectionArg::In) => Direction::Inbound,
            Some(DirectionArg::Out) => Direction::Outbound,
        } as i32,
        protocol: text(&args.protocol),
        method: args
            .method
            .as_deref()
            .map(str::to_ascii_uppercase)
            .unwrap_or_default(),
        path_prefix: text(&args.path_prefix),
        endpoint: text(&args.endpoint),
        status,
        status_class,
        grpc_status: args.grpc_status,
        min_duration: args.min_duration.map(|d| tapwire_proto::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }),
        text: text(&args.text),
        errors_only: args.errors,
        pid: args.pid.unwrap_or(0),
        remote_service: text(&args.remote_service),
    })
}

/// `404` is a status, `4xx` (or a lone `4`) a class.
fn parse_status(s: &str) -> Result<(u32, u32)> {
    let lower = s.to_ascii_lowercase();
    if let Some(class) = lower.strip_suffix("xx")
        && let Ok(c @ 1..=5) = class.parse::<u32>()
    {
        return Ok((0, c));
    }
    match s.parse::<u32>() {
        Ok(c @ 1..=5) => Ok((0, c)),
        Ok(code @ 100..=999) => Ok((code, 0)),
        _ => bail!("--status {s:?}: give a status like 404 or a class like 5xx"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_classes() {
        assert_eq!(parse_status("404").unwrap(), (404, 0));
        assert_eq!(parse_status("5xx").unwrap(), (0, 5));
        assert_eq!(parse_status("2XX").unwrap(), (0, 2));
        assert!(parse_status("9xx").is_err());
        assert!(parse_status("ok").is_err());
    }
}
