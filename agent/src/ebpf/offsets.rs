//! Resolves the kernel struct offsets the programs walk (fd → file → socket → sock, and
//! sock → socket → file).

use tapwire_agent_common::KernelOffsets;

use super::btf::{BtfError, KernelBtf};

/// Where the running kernel's BTF lives.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Reads every offset from the running kernel's BTF.
pub fn resolve_kernel_offsets(btf: &KernelBtf) -> Result<KernelOffsets, BtfError> {
    let plain = |s: &str, m: &str| btf.member(s, m).map(|l| l.offset);
    // Optional members: a bitfield or a missing member only disables that check.
    let optional = |s: &str, m: &str| match btf.member(s, m) {
        Ok(l) if !l.bitfield => l.offset,
        _ => KernelOffsets::ABSENT,
    };
    let common = plain("sock", "__sk_common")?;
    let skc = |m: &str| plain("sock_common", m).map(|o| o + common);
    let skc_optional = |m: &str| match btf.member("sock_common", m) {
        Ok(l) => l.offset + common,
        Err(_) => KernelOffsets::ABSENT,
    };
    let task_pid = match (
        btf.member("task_struct", "pid"),
        btf.member("task_struct", "tgid"),
    ) {
        (Ok(pid), Ok(tgid)) if !pid.bitfield && !tgid.bitfield && tgid.offset == pid.offset + 4 => {
            pid.offset
        }
        _ => KernelOffsets::ABSENT,
    };
    Ok(KernelOffsets {
        task_files: plain("task_struct", "files")?,
        task_pid,
        files_fdt: plain("files_struct", "fdt")?,
        fdtable_max_fds: plain("fdtable", "max_fds")?,
        fdtable_fd: plain("fdtable", "fd")?,
        file_inode: plain("file", "f_inode")?,
        file_private_data: plain("file", "private_data")?,
        inode_mode: plain("inode", "i_mode")?,
        socket_type: plain("socket", "type")?,
        socket_sk: plain("socket", "sk")?,
        socket_file: plain("socket", "file")?,
        sock_socket: plain("sock", "sk_socket")?,
        sock_protocol: optional("sock", "sk_protocol"),
        skc_family: skc("skc_family")?,
        skc_daddr: skc("skc_daddr")?,
        skc_rcv_saddr: skc("skc_rcv_saddr")?,
        skc_dport: skc("skc_dport")?,
        skc_num: skc("skc_num")?,
        skc_v6_daddr: skc_optional("skc_v6_daddr"),
        skc_v6_rcv_saddr: skc_optional("skc_v6_rcv_saddr"),
        valid: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs only a readable `/sys/kernel/btf/vmlinux` (any Linux with BTF).
    #[test]
    fn resolves_offsets_from_running_kernel() {
        let btf = match KernelBtf::from_file(VMLINUX_BTF) {
            Ok(btf) => btf,
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("skipping: {e}");
                return;
            }
            Err(e) => panic!("kernel BTF unreadable in CI: {e}"),
        };
        let offsets = resolve_kernel_offsets(&btf).expect("offsets");
        // sock_common starts struct sock; family follows the address/port unions.
        assert_eq!(offsets.skc_daddr, 0);
        assert_eq!(offsets.skc_rcv_saddr, 4);
        assert_eq!(offsets.skc_dport, 12);
        assert_eq!(offsets.skc_num, 14);
        assert_eq!(offsets.skc_family, 16);
        assert_ne!(offsets.sock_protocol, KernelOffsets::ABSENT);
        assert!(offsets.task_files > 0 && offsets.file_private_data > 0);
        assert_ne!(offsets.task_pid, KernelOffsets::ABSENT);
    }
}
