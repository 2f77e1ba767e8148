//! The event rings: one BPF ring buffer per CPU, reached through an array of maps indexed
//! by the CPU a program runs on.
//!
//! With one ring shared by every CPU, each record's reservation takes the ring's lock and
//! moves its producer position, and both cache lines (and the record's own) bounce
//! between the CPUs writing to it: at saturation on two CPUs that was about 250 ns of a
//! 1 µs event. A ring per CPU is written by that CPU alone. Records of one connection can
//! then sit in different rings (a thread that moved to another CPU); user space puts them
//! back in order by their per-connection sequence number (`agent/src/events/reorder.rs`).
//! User space may also point every slot at one ring (`--ring-layout shared`), which
//! these programs do not need to know.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    btf_maps::{ArrayOfMaps, RingBuf},
    cty::c_void,
    helpers::generated::{bpf_get_smp_processor_id, bpf_ringbuf_output, bpf_ringbuf_query},
    macros::btf_map,
};
use tapwire_agent_common::drop_reason;

use crate::events::count_drop;

/// Unread bytes of a ring at which its reader is woken. Below it records are submitted
/// without a wakeup and user space drains on its own short timer: one wakeup per batch
/// instead of one per event is most of the difference at high event rates.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 256 * 1024;

/// A connection's data records check the ring's fill level at least every this many
/// records ([`fill_check_due`])...
const CHECK_EVERY_RECORDS: u64 = 16;

/// ...and as soon as this many of its bytes went unchecked.
pub const CHECK_EVERY_BYTES: u64 = 16 * 1024;

/// Whether the data record numbered `seq` of its connection, with `unchecked` bytes of
/// it not yet covered by a fill-level check, is to check ([`CpuRing::output_data`]).
/// Both bounds keep what a check can miss small: the records of many quiet connections
/// still check every few records, a busy connection every few KiB.
#[inline(always)]
pub fn fill_check_due(seq: u64, unchecked: u64) -> bool {
    seq % CHECK_EVERY_RECORDS == 0 || unchecked >= CHECK_EVERY_BYTES
}

/// The template the kernel checks every inner ring against (type and flags; a ring's
/// size is not part of the check, so user space creates the real rings at any size).
type CpuRingDef = RingBuf<u8, 4096>;

/// Ring of each possible CPU; user space sizes the array and fills every slot.
#[btf_map]
static RINGS: ArrayOfMaps<CpuRingDef, 1> = ArrayOfMaps::new();

/// The ring of the CPU this program runs on. Programs do not migrate while they run, so
/// it stays the right ring until the program ends.
#[derive(Clone, Copy)]
pub struct CpuRing(*mut c_void);

impl CpuRing {
    /// The current CPU's ring; `None` (counted as a full ring) when user space left the
    /// slot empty.
    #[inline(always)]
    pub fn current() -> Option<Self> {
        let cpu = unsafe { bpf_get_smp_processor_id() };
        match RINGS.get(cpu) {
            Some(ring) => Some(Self(core::ptr::from_ref(ring).cast_mut().cast())),
            None => {
                count_drop(drop_reason::RING_FULL);
                None
            }
        }
    }

    /// Copies `record` into the ring; counts a full ring.
    #[inline(always)]
    pub fn output(self, record: &[u8]) -> bool {
        let flags = self.wakeup_flag(record.len() as u64);
        self.submit(record, flags)
    }

    /// Copies a data record into the ring. `unchecked` is the bytes its connection
    /// put in rings since its last fill-level check, this record included, when this
    /// record is to check ([`fill_check_due`]); otherwise it is submitted without a
    /// wakeup. Reading the fill level reads the consumer position, a cache line the
    /// reader's CPU writes: it was a twentieth of a data event's cost. A check covers
    /// the bytes since the previous one, so the records in between still count toward
    /// the wakeup multiple they cross.
    #[inline(always)]
    pub fn output_data(self, record: &[u8], unchecked: Option<u64>) -> bool {
        let flags = match unchecked {
            Some(bytes) => self.wakeup_flag(bytes),
            None => BPF_RB_NO_WAKEUP as u64,
        };
        self.submit(record, flags)
    }

    #[inline(always)]
    fn submit(self, record: &[u8], flags: u64) -> bool {
        let ret = unsafe {
            bpf_ringbuf_output(
                self.0,
                record.as_ptr() as *mut c_void,
                record.len() as u64,
                flags,
            )
        };
        if ret != 0 {
            count_drop(drop_reason::RING_FULL);
        }
        ret == 0
    }

    /// Submit flags for `size` bytes just added to the ring: a wakeup only when they
    /// make the unread bytes cross a multiple of `WAKEUP_BYTES`. A wakeup is an
    /// irq_work (a self-IPI: an exit to the hypervisor in a VM) plus waking the reader;
    /// forcing one for every record while the backlog stays above the threshold made
    /// most records pay that price at saturation. Waking again at each further multiple
    /// keeps a reader that is falling behind from waiting for its timer while the ring
    /// fills.
    #[inline(always)]
    fn wakeup_flag(self, size: u64) -> u64 {
        let threshold = unsafe { core::ptr::read_volatile(&raw const WAKEUP_BYTES) };
        let threshold = if threshold == 0 { 1 } else { threshold };
        let unread = unsafe { bpf_ringbuf_query(self.0, BPF_RB_AVAIL_DATA as u64) };
        if unread / threshold != (unread + size) / threshold {
            BPF_RB_FORCE_WAKEUP as u64
        } else {
            BPF_RB_NO_WAKEUP as u64
        }
    }
}
