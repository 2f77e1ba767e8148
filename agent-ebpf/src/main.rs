//! tapwire's kernel programs.
//!
//! Syscall tracepoints report each socket call at its exit (arguments from the saved
//! registers), with the bytes really moved; OpenSSL uprobes report plaintext and mark the
//! socket so its ciphertext is suppressed; sched tracepoints tell user space about exec
//! and exit. Where the kernel allows, socket tracepoints (`socket_calls`) take the socket
//! calls instead of the syscall exits. Every record goes to the ring of the CPU it was
//! produced on (`ring`).
#![no_std]
#![no_main]
// The atomic add of the SSL in-flight count (`tls`): the BPF target offers no atomic
// read-modify-write methods.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod events;
mod filters;
mod kernel_structs;
mod ring;
mod socket_calls;
mod syscalls;
mod tls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
