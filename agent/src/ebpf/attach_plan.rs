//! What was attached at start-up and, for what was not, why: printed so an operator sees
//! at once whether capture works and which capability or kernel feature is missing.

use std::fmt;

/// One program attached to one hook, or the reason it is not.
#[derive(Debug, Clone)]
pub struct AttachOutcome {
    /// The program's name in the object file.
    pub program: String,
    /// Where it attaches (`syscalls/sys_enter_read`, `/usr/lib/…/libssl.so.3`).
    pub target: String,
    /// `None` when attached; otherwise why not.
    pub failure: Option<String>,
}

/// Every outcome of the start-up attach step.
#[derive(Debug, Clone, Default)]
pub struct AttachPlan {
    /// In attach order.
    pub outcomes: Vec<AttachOutcome>,
}

impl AttachPlan {
    /// Records a success or a failure with its explanation.
    pub fn record(&mut self, program: &str, target: &str, result: Result<(), String>) {
        self.outcomes.push(AttachOutcome {
            program: program.to_string(),
            target: target.to_string(),
            failure: result.err(),
        });
    }

    /// How many program/hook pairs are attached.
    pub fn attached(&self) -> usize {
        self.outcomes.iter().filter(|o| o.failure.is_none()).count()
    }

    /// Whether `program` is attached to `target`.
    pub fn is_attached(&self, program: &str, target: &str) -> bool {
        self.outcomes
            .iter()
            .any(|o| o.program == program && o.target == target && o.failure.is_none())
    }
}

impl fmt::Display for AttachPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "attach plan ({} of {} attached):",
            self.attached(),
            self.outcomes.len()
        )?;
        for o in &self.outcomes {
            match &o.failure {
                None => writeln!(f, "  [ok]     {:<16} {}", o.program, o.target)?,
                Some(why) => writeln!(f, "  [FAILED] {:<16} {}: {}", o.program, o.target, why)?,
            }
        }
        Ok(())
    }
}

/// Explains an attach or load error in terms of what the operator can change.
pub fn explain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if text.contains("tracefs not found") {
        text.push_str(" (mount tracefs at /sys/kernel/tracing; without root it needs CAP_DAC_READ_SEARCH to be read)");
    }
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.raw_os_error() {
                Some(libc::EPERM) => {
                    text.push_str(" (missing capability: CAP_BPF and CAP_PERFMON are needed, CAP_SYS_ADMIN for classic uprobes)")
                }
                Some(libc::EACCES) => text.push_str(" (rejected by the verifier, see its log above, or access denied)"),
                Some(libc::ENOENT) => text.push_str(" (hook absent on this kernel)"),
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
                    text.push_str(" (kernel feature unsupported)")
                }
                _ => {}
            }
            break;
        }
        current = e.source();
    }
    text
}
