//! `tapwire throughput|endpoints|deps|services`: aggregated views.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use tapwire_proto::v1::{
    DependenciesRequest, EndpointsRequest, Filter, ServicesRequest, ThroughputBucket,
    ThroughputRequest,
};

use crate::args::Output;
use crate::connect::Client;
use crate::pairs_cmd::json_line;
use crate::render::{self, Cell, Colour, Table};
use crate::timespec::system_time;

/// Width of the throughput bars.
const BAR: usize = 40;

fn error_cell(errors: u64, count: u64) -> Cell {
    let text = if count == 0 {
        "-".to_owned()
    } else {
        format!("{errors} ({:.1}%)", errors as f64 * 100.0 / count as f64)
    };
    Cell::coloured(
        text,
        if errors > 0 {
            Colour::Red
        } else {
            Colour::Plain
        },
    )
}

/// A bar of `#` (inbound) then `+` (outbound), scaled to the busiest bucket.
pub fn bar(inbound: u64, outbound: u64, max: u64) -> String {
    if max == 0 {
        return String::new();
    }
    let scale = |n: u64| ((n as f64 / max as f64) * BAR as f64).round() as usize;
    let total = scale(inbound + outbound);
    let ins = scale(inbound).min(total);
    format!("{}{}", "#".repeat(ins), "+".repeat(total - ins))
}

/// A bucket's time of day in UTC (`HH:MM` or `HH:MM:SS`), with the date for day buckets.
fn bucket_label(b: &ThroughputBucket, interval: Duration) -> String {
    let t = b
        .time
        .as_ref()
        .map(system_time)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let full = humantime::format_rfc3339_seconds(t).to_string();
    // 2026-11-28T08:01:00Z
    let part = |r: std::ops::Range<usize>| full.get(r).unwrap_or(&full).to_owned();
    match interval.as_secs() {
        s if s >= 86_400 => part(0..10),
        s if s % 60 == 0 => format!("{} {}", part(5..10), part(11..16)),
        _ => part(11..19),
    }
}

/// `tapwire throughput`.
pub async fn throughput(
    client: &mut Client,
    output: Output,
    filter: Filter,
    interval: Duration,
) -> Result<()> {
    let answer = client
        .throughput(ThroughputRequest {
            filter: Some(filter),
            interval: Some(tapwire_proto::Duration {
                seconds: interval.as_secs() as i64,
                nanos: interval.subsec_nanos() as i32,
            }),
        })
        .await
        .context("Throughput")?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if output == Output::Json {
        for b in &answer.buckets {
            json_line(&mut out, b)?;
        }
        return Ok(());
    }
    let max = answer
        .buckets
        .iter()
        .map(|b| b.inbound + b.outbound)
        .max()
        .unwrap_or(0);
    let mut table = Table::new(&[
        "TIME (UTC)",
        ">IN",
        ">OUT",
        ">ERRORS",
        ">P50",
        ">P95",
        ">P99",
        "# in + out",
    ]);
    for b in &answer.buckets {
        let count = b.inbound + b.outbound;
        let latency = |ns: u64| {
            if count == 0 {
                "-".to_owned()
            } else {
                render::nanos(ns)
            }
        };
        table.row(vec![
            Cell::plain(bucket_label(b, interval)),
            Cell::plain(b.inbound.to_string()),
            Cell::plain(b.outbound.to_string()),
            error_cell(b.inbound_errors + b.outbound_errors, count),
            Cell::plain(latency(b.p50_ns)),
            Cell::plain(latency(b.p95_ns)),
            Cell::plain(latency(b.p99_ns)),
            Cell::coloured(bar(b.inbound, b.outbound, max), Colour::Green),
        ]);
    }
    table.print(&mut out, render::colours_on())?;
    eprintln!(
        "({} buckets from {} rows)",
        answer.buckets.len(),
        answer.source
    );
    Ok(())
}

/// `tapwire endpoints`.
pub async fn endpoints(
    client: &mut Client,
    output: Output,
    filter: Filter,
    limit: u32,
) -> Result<()> {
    let answer = client
        .endpoints(EndpointsRequest {
            filter: Some(filter),
            limit,
        })
        .await
        .context("Endpoints")?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if output == Output::Json {
        for e in &answer.endpoints {
            json_line(&mut out, e)?;
        }
        return Ok(());
    }
    let mut table = Table::new(&[
        "SERVICE", "DIR", "PROTOCOL", "METHOD", "ENDPOINT", ">COUNT", ">ERRORS", ">P50", ">P95",
        ">P99",
    ]);
    for e in &answer.endpoints {
        table.row(vec![
            Cell::plain(e.service.clone()),
            Cell::plain(if e.is_inbound { "in" } else { "out" }),
            Cell::plain(e.protocol.clone()),
            Cell::plain(e.method.clone()),
            Cell::plain(render::cut(&e.endpoint, 60)),
            Cell::plain(e.count.to_string()),
            error_cell(e.errors, e.count),
            Cell::plain(render::nanos(e.p50_ns)),
            Cell::plain(render::nanos(e.p95_ns)),
            Cell::plain(render::nanos(e.p99_ns)),
        ]);
    }
    table.print(&mut out, render::colours_on())?;
    Ok(())
}

/// `tapwire deps`.
pub async fn deps(client: &mut Client, output: Output, filter: Filter) -> Result<()> {
    let answer = client
        .dependencies(DependenciesRequest {
            filter: Some(filter),
        })
        .await
        .context("Dependencies")?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if output == Output::Json {
        for e in &answer.edges {
            json_line(&mut out, e)?;
        }
        return Ok(());
    }
    let mut table = Table::new(&[
        "FROM", "", "TO", "PROTOCOL", ">CALLS", ">ERRORS", ">P50", ">P99",
    ]);
    for e in &answer.edges {
        table.row(vec![
            Cell::plain(e.from_service.clone()),
            Cell::coloured("->", Colour::Dim),
            Cell::plain(e.to.clone()),
            Cell::plain(e.protocol.clone()),
            Cell::plain(e.count.to_string()),
            error_cell(e.errors, e.count),
            Cell::plain(render::nanos(e.p50_ns)),
            Cell::plain(render::nanos(e.p99_ns)),
        ]);
    }
    table.print(&mut out, render::colours_on())?;
    Ok(())
}

/// `tapwire services`.
pub async fn services(client: &mut Client, output: Output, filter: Filter) -> Result<()> {
    let answer = client
        .services(ServicesRequest {
            filter: Some(filter),
        })
        .await
        .context("Services")?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if output == Output::Json {
        for s in &answer.services {
            json_line(&mut out, s)?;
        }
        return Ok(());
    }
    let mut table = Table::new(&["SERVICE", "NAMESPACE", ">INBOUND", ">OUTBOUND", ">ERRORS"]);
    for s in &answer.services {
        table.row(vec![
            Cell::plain(s.service.clone()),
            Cell::plain(s.namespace.clone()),
            Cell::plain(s.inbound.to_string()),
            Cell::plain(s.outbound.to_string()),
            error_cell(s.errors, s.inbound + s.outbound),
        ]);
    }
    table.print(&mut out, render::colours_on())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_busiest_bucket() {
        assert_eq!(bar(0, 0, 0), "");
        assert_eq!(bar(10, 10, 20).len(), BAR);
        assert_eq!(
            bar(10, 10, 20),
            format!("{}{}", "#".repeat(20), "+".repeat(20))
        );
        assert_eq!(bar(1, 0, 40), "#");
    }
}
