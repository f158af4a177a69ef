//! The open-file limit the RKLLM runtime needs.
//!
//! The runtime opens a DMA-buf handle per weight buffer; with the common default of 1024 open
//! files its init fails with `failed to convert handle(1020) to fd … Too many open files`.
//! The vendor's fix is `ulimit -n 102400`; the agent raises its own soft limit at start
//! instead, which any process may do up to its hard limit.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use serde::Serialize;

/// The open-file limit the vendor's instructions set (`ulimit -n 102400`).
pub const VENDOR_NOFILE: u64 = 102_400;

/// Open-file limits before and after [`raise_nofile`]. "Unlimited" is `u64::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NofileOutcome {
    pub before_soft: u64,
    pub hard: u64,
    pub after_soft: u64,
}

/// Raises this process's soft `RLIMIT_NOFILE` to `min(target, hard)`; never lowers it. A
/// failed `setrlimit` (unexpected: the soft limit may always move up to the hard one) is
/// logged and shows as `after_soft == before_soft`.
pub fn raise_nofile(target: u64) -> NofileOutcome {
    let limit = getrlimit(Resource::Nofile);
    let before_soft = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let Some(new_soft) = raised_soft(before_soft, hard, target) else {
        return NofileOutcome { before_soft, hard, after_soft: before_soft };
    };
    match setrlimit(Resource::Nofile, Rlimit { current: Some(new_soft), maximum: limit.maximum }) {
        Ok(()) => {
            tracing::debug!(from = before_soft, to = new_soft, "raised the open-file limit");
            NofileOutcome { before_soft, hard, after_soft: new_soft }
        }
        Err(e) => {
            tracing::warn!(error = %e, target = new_soft, "could not raise the open-file limit");
            NofileOutcome { before_soft, hard, after_soft: before_soft }
        }
    }
}

/// The soft limit to set, or `None` when it is already high enough or cannot go higher.
fn raised_soft(soft: u64, hard: u64, target: u64) -> Option<u64> {
    let want = target.min(hard);
    (want > soft).then_some(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_up_to_the_hard_limit_only() {
        assert_eq!(raised_soft(1024, 524_288, VENDOR_NOFILE), Some(VENDOR_NOFILE));
        assert_eq!(raised_soft(1024, 4096, VENDOR_NOFILE), Some(4096));
        assert_eq!(raised_soft(4096, 4096, VENDOR_NOFILE), None);
        assert_eq!(raised_soft(u64::MAX, u64::MAX, VENDOR_NOFILE), None);
        assert_eq!(raised_soft(200_000, u64::MAX, VENDOR_NOFILE), None);
    }

    #[test]
    fn raising_in_process_never_lowers() {
        let out = raise_nofile(VENDOR_NOFILE);
        assert!(out.after_soft >= out.before_soft);
        assert!(out.after_soft >= VENDOR_NOFILE.min(out.hard));
    }
}
