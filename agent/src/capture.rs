//! The agent's run loop: start-up (host setup, offsets, load, attach plan, TLS
//! discovery), then the event rings read through one `AsyncFd`, a 1 s tick, and a clean
//! shutdown on SIGINT/SIGTERM that drains the rings and flushes the sink.

use std::sync::{Arc, atomic::Ordering, mpsc::sync_channel};

use anyhow::{Context as _, bail};
use aya::maps::{MapData, PerCpuArray};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Duration, MissedTickBehavior, interval},
};
use tracing::{error, info, warn};

use crate::{
    config::AgentArgs,
    connections::table::ConnectionTable,
    ebpf::{
        btf::KernelBtf,
        loader::{CaptureFilters, LoadOptions, load_and_attach},
        offsets::{VMLINUX_BTF, resolve_kernel_offsets},
        rings::{EventRings, RingPlan},
        tls_libraries::{TlsLibraryWatcher, TlsStats},
    },
    host_setup::{ensure_kernel_filesystems, raise_memlock_limit},
    metrics::{AgentMetrics, serve},
    output::StreamSink,
    pipeline::CapturePipeline,
};

/// How often the rings are drained without a kernel wakeup.
const DRAIN_INTERVAL: Duration = Duration::from_millis(20);

/// Printed on stderr once capture runs (tests and scripts wait for it).
pub const READY_LINE: &str = "tapwire-agent: capturing";

/// Runs the agent until SIGINT/SIGTERM. Errors mean capture is impossible.
/// `register_metrics` adds other components' metrics to the agent's endpoint.
pub async fn run(
    args: AgentArgs,
    sink: Box<dyn StreamSink>,
    register_metrics: impl FnOnce(&mut prometheus_client::registry::Registry),
) -> anyhow::Result<()> {
    ensure_kernel_filesystems();
    raise_memlock_limit();
    let btf =
        KernelBtf::from_file(VMLINUX_BTF).context("kernel BTF is needed to find socket structs")?;
    let offsets =
        resolve_kernel_offsets(&btf).context("resolving kernel struct offsets from BTF")?;
    drop(btf);
    let ring_bytes = args
        .ring_mib
        .checked_mul(1024 * 1024)
        .filter(|b| *b > 0)
        .context("--ring-mib must be between 1 and 4095")?;
    let rings = RingPlan::new(args.ring_layout, ring_bytes)?;
    let options = LoadOptions {
        syscall_hook: args.syscall_hook,
        capture_bytes: args.capture_bytes,
        rings,
        filters: CaptureFilters {
            include_pids: args.include_pids.clone(),
            exclude_pids: args.exclude_pids.clone(),
            include_ports: args.include_ports.clone(),
            exclude_ports: args.exclude_ports.clone(),
            include_cgroups: args.include_cgroups.clone(),
            exclude_cgroups: args.exclude_cgroups.clone(),
        },
    };
    let loaded = load_and_attach(&options, &offsets, !args.no_tls)?;
    let mut plan = loaded.plan;
    let mut metrics = AgentMetrics::new();
    register_metrics(metrics.registry_mut());
    let metrics = Arc::new(metrics);
    let tls_stats = Arc::new(TlsStats::default());
    let (exec_tx, exec_rx) = sync_channel::<u32>(4096);
    // The watcher owns the loaded object once it runs; without TLS probes there is no
    // watcher, and the object is kept here instead: dropping it detaches every program.
    let (watcher, _programs) = if args.no_tls {
        (None, Some(loaded.ebpf))
    } else {
        let mut watcher = TlsLibraryWatcher::new(loaded.ebpf, tls_stats.clone());
        watcher.scan_all(&mut plan);
        (Some(watcher), None)
    };
    eprint!("{plan}");
    let tracepoints =
        (plan.attached() as u64).saturating_sub(tls_stats.probes.load(Ordering::Relaxed));
    let watcher_thread = watcher
        .map(|watcher| {
            std::thread::Builder::new()
                .name("tls-libraries".into())
                .spawn(move || watcher.run(exec_rx))
                .context("starting the TLS library watcher")
        })
        .transpose()?;

    if let Some(addr) = args.metrics_addr {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(addr, metrics).await {
                error!(%addr, error = %e, "metrics endpoint failed");
            }
        });
    }
    let table = ConnectionTable::new(
        args.max_connections,
        args.idle_timeout_secs.saturating_mul(1_000_000_000),
    );
    let execs = (!args.no_tls).then_some(exec_tx);
    let mut pipeline = CapturePipeline::new(table, sink, metrics.clone(), execs);
    info!(
        rings = loaded.rings.len(),
        ring_bytes = loaded.rings.ring_bytes(),
        layout = ?args.ring_layout,
        "event rings"
    );
    // SAFETY: EventRings owns its epoll fd and keeps it open, unchanged, until it is
    // dropped together with the AsyncFd.
    let mut rings = unsafe { AsyncFd::register_with_interest(loaded.rings, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("registering the event rings with tokio")?;
    let drops = loaded.drops;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut tick = interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The kernel wakes us only for large backlogs (see WAKEUP_BYTES); this bounds the
    // delay of everything else.
    let mut drain_tick = interval(DRAIN_INTERVAL);
    drain_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    eprintln!("{READY_LINE}");
    info!("capture running");
    loop {
        tokio::select! {
            guard = rings.readable_mut() => {
                let mut guard = guard.context("waiting on the event rings")?;
                // Cleared before draining: a wakeup for records submitted while we
                // drain then makes the rings ready again instead of being lost.
                guard.clear_ready();
                drain(guard.get_inner_mut(), &mut pipeline)?;
                pipeline.flush()?;
            }
            _ = drain_tick.tick() => {
                drain(rings.get_mut(), &mut pipeline)?;
                pipeline.flush()?;
            }
            _ = tick.tick() => {
                pipeline.tick()?;
                metrics.observe_kernel_drops(&read_drops(&drops));
                metrics.probes_attached.set((tracepoints + tls_stats.probes.load(Ordering::Relaxed)) as i64);
                metrics.tls_libraries.set(tls_stats.libraries.load(Ordering::Relaxed) as i64);
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    info!("stopping: draining the event rings");
    drain(rings.get_mut(), &mut pipeline)?;
    pipeline.shutdown()?;
    metrics.observe_kernel_drops(&read_drops(&drops));
    let dropped = read_drops(&drops);
    info!(
        ?dropped,
        "kernel drop counters at exit (ring_full, copy_failed, tls_no_socket, state_full, truncated)"
    );
    // Closing the exec channel stops the watcher, which detaches every probe.
    drop(pipeline);
    if watcher_thread.is_some_and(|t| t.join().is_err()) {
        warn!("TLS library watcher panicked");
    }
    Ok(())
}

/// Records read from one ring before the next ring's turn.
const RECORDS_PER_TURN: usize = 64;

/// One round: every ring drained, then the records held for reordering that no longer
/// have to wait are handed on. The rings take turns, a few records each, so they
/// advance through time together: drained one after the other, a backlog in the first
/// (after a burst, or a slow reader) would have every record whose predecessor sits in
/// the second held until the second is reached, more than the reorder buffer keeps,
/// and those forced out early would count as lost.
fn drain(rings: &mut EventRings, pipeline: &mut CapturePipeline) -> anyhow::Result<()> {
    // The round ends after a pass in which every ring ran empty during its turn, not
    // one in which all are empty at once, which a reader only just keeping up might
    // not see for a long time.
    loop {
        let mut any_full_turn = false;
        for ring in rings.rings_mut() {
            let mut read = 0;
            while read < RECORDS_PER_TURN {
                let Some(item) = ring.next() else { break };
                read += 1;
                pipeline.handle_record(&item)?;
            }
            any_full_turn |= read == RECORDS_PER_TURN;
        }
        if !any_full_turn {
            break;
        }
    }
    pipeline.end_round()?;
    Ok(())
}

fn read_drops(drops: &PerCpuArray<MapData, u64>) -> Vec<u64> {
    (0..tapwire_agent_common::drop_reason::COUNT)
        .map(|i| {
            drops
                .get(&i, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0)
        })
        .collect()
}

/// Fails early with a clear message when not running with enough privilege.
pub fn check_privileges() -> anyhow::Result<()> {
    if !std::path::Path::new(VMLINUX_BTF).exists() {
        bail!("{VMLINUX_BTF} is missing: this kernel has no BTF, capture is impossible");
    }
    Ok(())
}
