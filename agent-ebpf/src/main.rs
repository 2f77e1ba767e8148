//! tapwire's kernel programs.
//!
//! Syscall tracepoints remember each socket call at entry (fd, buffer) and report the
//! bytes really moved at exit; OpenSSL uprobes report plaintext and mark the socket so
//! its ciphertext is suppressed; sched tracepoints tell user space about exec and exit.
#![no_std]
#![no_main]

mod events;
mod filters;
mod kernel_structs;
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
