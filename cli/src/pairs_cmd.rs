//! `tapwire pairs list|get`, `tapwire tail` and `tapwire export`: commands about individual
//! pairs.

use std::io::Write;
use std::time::SystemTime;

use anyhow::{Context, Result};
use tapwire_proto::v1::{
    DecodedBody, ExportFormat, ExportRequest, Filter, GetPairRequest, GetPairResponse,
    ListPairsRequest, Message, PairSummary, TailRequest,
};
use tokio_stream::StreamExt;

use crate::args::{ExportFormatArg, Output};
use crate::connect::Client;
use crate::render::{self, Cell, Colour, Table};
use crate::timespec::system_time;

/// Writes one message as a JSON line.
pub fn json_line(out: &mut impl Write, value: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer(&mut *out, value).context("writing JSON")?;
    writeln!(out)?;
    Ok(())
}

fn is_error(p: &PairSummary) -> bool {
    p.status >= 500 || p.status == 0 || p.grpc_status.is_some_and(|g| g != 0)
}

fn status_text(p: &PairSummary) -> String {
    match (p.status, p.grpc_status) {
        (0, _) => "-".into(),
        (s, Some(g)) => format!("{s}/{g}"),
        (s, None) => s.to_string(),
    }
}

fn summary_cells(p: &PairSummary, now: SystemTime) -> Vec<Cell> {
    let when = p
        .time
        .as_ref()
        .map(system_time)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let target = format!("{}{}", p.authority, p.path);
    vec![
        Cell::coloured(render::relative(when, now), Colour::Dim),
        Cell::plain(if p.is_inbound { "in" } else { "out" }),
        Cell::plain(p.service.clone()),
        Cell::plain(p.method.clone()),
        Cell::plain(render::cut(&target, 60)),
        Cell::coloured(status_text(p), render::status_colour(p.status, is_error(p))),
        Cell::plain(render::nanos(p.duration_ns)),
        Cell::plain(render::bytes(p.response_size)),
        Cell::coloured(p.id.clone(), Colour::Dim),
    ]
}

const SUMMARY_HEADERS: [&str; 9] = [
    "TIME",
    "DIR",
    "SERVICE",
    "METHOD",
    "TARGET",
    "STATUS",
    ">DURATION",
    ">SIZE",
    "ID",
];

/// `tapwire pairs list`.
pub async fn list(
    client: &mut Client,
    output: Output,
    filter: Filter,
    limit: u32,
    cursor: Option<String>,
) -> Result<()> {
    let answer = client
        .list_pairs(ListPairsRequest {
            filter: Some(filter),
            limit,
            cursor: cursor.unwrap_or_default(),
        })
        .await
        .context("ListPairs")?
        .into_inner();
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            for p in &answer.pairs {
                json_line(&mut out, p)?;
            }
        }
        Output::Table => {
            let now = SystemTime::now();
            let mut table = Table::new(&SUMMARY_HEADERS);
            for p in &answer.pairs {
                table.row(summary_cells(p, now));
            }
            table.print(&mut out, render::colours_on())?;
        }
    }
    if !answer.next_cursor.is_empty() {
        eprintln!("older: --cursor {}", answer.next_cursor);
    }
    if !answer.prev_cursor.is_empty() {
        eprintln!("newer: --cursor {}", answer.prev_cursor);
    }
    Ok(())
}

/// `tapwire pairs get`.
pub async fn get(client: &mut Client, output: Output, id: String, decode: bool) -> Result<()> {
    let answer = client
        .get_pair(GetPairRequest { id, decode })
        .await
        .context("GetPair")?
        .into_inner();
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => json_line(&mut out, &answer),
        Output::Table => print_pair(&mut out, &answer),
    }
}

fn print_headers(out: &mut impl Write, prefix: &str, m: &Message) -> Result<()> {
    for h in &m.headers {
        writeln!(out, "{prefix} {}: {}", h.name, h.value)?;
    }
    Ok(())
}

fn print_body(out: &mut impl Write, m: &Message, decoded: Option<&DecodedBody>) -> Result<()> {
    let (data, note) = match decoded {
        Some(d) => (&d.data, d.error.as_str()),
        None => (&m.body, ""),
    };
    if data.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    match std::str::from_utf8(data) {
        Ok(text) if decoded.is_some() || m.content_encoding.is_empty() => writeln!(out, "{text}")?,
        _ => writeln!(
            out,
            "({} bytes{}; use --decode, or -o json for the bytes)",
            data.len(),
            if m.content_encoding.is_empty() {
                String::new()
            } else {
                format!(", {}", m.content_encoding)
            }
        )?,
    }
    if m.body_truncated {
        writeln!(out, "(captured {} of {} bytes)", m.body.len(), m.body_size)?;
    }
    if !note.is_empty() {
        writeln!(out, "(decoding: {note})")?;
    }
    Ok(())
}

fn print_pair(out: &mut impl Write, answer: &GetPairResponse) -> Result<()> {
    let Some(p) = &answer.pair else {
        anyhow::bail!("the server sent no pair");
    };
    let when = p
        .start_time
        .as_ref()
        .map(system_time)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    writeln!(out, "id        {}", p.id)?;
    writeln!(
        out,
        "time      {} ({})  duration {}",
        humantime::format_rfc3339_micros(when),
        render::relative(when, SystemTime::now()),
        render::nanos(p.duration_ns)
    )?;
    writeln!(
        out,
        "service   {} ({}) namespace {} pod {} node {}",
        p.service,
        if p.is_inbound { "inbound" } else { "outbound" },
        p.namespace,
        p.pod,
        p.node
    )?;
    writeln!(
        out,
        "process   {} pid {}  {} -> {}  {}",
        p.comm, p.pid, p.local_addr, p.remote_addr, p.protocol
    )?;
    let mut flags = Vec::new();
    for (set, name) in [
        (p.tls, "tls"),
        (!p.complete, "incomplete"),
        (p.truncated, "truncated"),
        (p.partial_headers, "partial-headers"),
        (p.lost_events, "lost-events"),
    ] {
        if set {
            flags.push(name);
        }
    }
    if !flags.is_empty() {
        writeln!(out, "flags     {}", flags.join(" "))?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "> {} {}://{}{}",
        p.method,
        if p.scheme.is_empty() {
            "http"
        } else {
            &p.scheme
        },
        p.authority,
        p.path
    )?;
    if let Some(req) = &p.request {
        print_headers(out, ">", req)?;
        print_body(out, req, answer.request_body.as_ref())?;
    }
    writeln!(out)?;
    let grpc = p
        .grpc_status
        .map(|g| format!(" grpc-status {g} {}", p.grpc_message))
        .unwrap_or_default();
    writeln!(
        out,
        "< {}{grpc}",
        if p.status == 0 {
            "(no response)".to_owned()
        } else {
            p.status.to_string()
        }
    )?;
    if let Some(resp) = &p.response {
        print_headers(out, "<", resp)?;
        print_body(out, resp, answer.response_body.as_ref())?;
    }
    for (i, m) in p.messages.iter().enumerate() {
        let side = if m.from_client { ">" } else { "<" };
        match answer.messages_json.get(i) {
            Some(json) => writeln!(out, "{side} message {i}: {json}")?,
            None => writeln!(out, "{side} message {i}: {} bytes", m.data.len())?,
        }
    }
    Ok(())
}

/// `tapwire tail`.
pub async fn tail(client: &mut Client, output: Output, filter: Filter) -> Result<()> {
    let mut stream = client
        .tail(TailRequest {
            filter: Some(filter),
        })
        .await
        .context("Tail")?
        .into_inner();
    let colour = render::colours_on();
    while let Some(item) = stream.next().await {
        let p = item.context("Tail")?;
        let mut out = std::io::stdout().lock();
        match output {
            Output::Json => json_line(&mut out, &p)?,
            Output::Table => writeln!(out, "{}", tail_line(&p, colour))?,
        }
        out.flush()?;
    }
    Ok(())
}

/// One `tail` row: rows arrive one by one, so the columns have fixed widths.
fn tail_line(p: &PairSummary, colour: bool) -> String {
    let when = p
        .time
        .as_ref()
        .map(system_time)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let clock = humantime::format_rfc3339_millis(when).to_string();
    let status = status_text(p);
    let status = format!("{status:<7}");
    let status = if colour {
        let code = match render::status_colour(p.status, is_error(p)) {
            Colour::Green => "\x1b[32m",
            Colour::Yellow => "\x1b[33m",
            _ => "\x1b[31m",
        };
        format!("{code}{status}\x1b[0m")
    } else {
        status
    };
    format!(
        "{:<12}  {:<3}  {:<16}  {:<6}  {:<50}  {status}  {:>9}  {:>8}  {}",
        clock.get(11..23).unwrap_or(&clock),
        if p.is_inbound { "in" } else { "out" },
        render::cut(&p.service, 16),
        render::cut(&p.method, 6),
        render::cut(&format!("{}{}", p.authority, p.path), 50),
        render::nanos(p.duration_ns),
        render::bytes(p.response_size),
        p.id
    )
}

/// `tapwire export`.
pub async fn export(
    client: &mut Client,
    filter: Filter,
    format: ExportFormatArg,
    limit: u64,
    file: Option<std::path::PathBuf>,
) -> Result<()> {
    let format = match format {
        ExportFormatArg::Har => ExportFormat::Har,
        ExportFormatArg::Jsonl => ExportFormat::Jsonl,
    };
    let mut stream = client
        .export(ExportRequest {
            filter: Some(filter),
            format: format as i32,
            limit,
        })
        .await
        .context("Export")?
        .into_inner();
    let mut out: Box<dyn Write> = match &file {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut bytes = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("Export")?;
        bytes += chunk.data.len();
        out.write_all(&chunk.data).context("writing the export")?;
    }
    out.flush().context("writing the export")?;
    if let Some(path) = file {
        eprintln!(
            "wrote {} to {}",
            render::bytes(bytes as u64),
            path.display()
        );
    }
    Ok(())
}
