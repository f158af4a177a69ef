//! NPU memory accounting per `base_domain_id`, shared by every handle in the process.
//!
//! On the board a second instance in the same domain fails at init with
//! `failed to malloc npu memory` (rknn-llm #437) and callers must move it to another domain.
//! The sim reproduces that: each domain has a budget (`RKLLM_SIM_DOMAIN_MB`), a handle
//! reserves its model's memory at init and gives it back when destroyed.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

/// Bytes in use per domain id.
static USED: Mutex<Option<HashMap<i32, u64>>> = Mutex::new(None);

/// Memory held by one handle; released on drop, so a handle cannot leak it.
#[derive(Debug)]
pub(crate) struct Reservation {
    domain: i32,
    bytes: u64,
}

/// Reserves `bytes` in `domain` if the domain's budget allows it.
pub(crate) fn reserve(domain: i32, bytes: u64, budget: u64) -> Option<Reservation> {
    let mut guard = USED.lock().unwrap_or_else(PoisonError::into_inner);
    let used = guard.get_or_insert_with(HashMap::new).entry(domain).or_insert(0);
    if used.saturating_add(bytes) > budget {
        return None;
    }
    *used += bytes;
    Some(Reservation { domain, bytes })
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut guard = USED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(used) = guard.get_or_insert_with(HashMap::new).get_mut(&self.domain) {
            *used = used.saturating_sub(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_shared_and_released() {
        // A domain id no other test uses.
        let d = -4242;
        let a = reserve(d, 600, 1000).expect("fits");
        assert!(reserve(d, 600, 1000).is_none());
        drop(a);
        assert!(reserve(d, 600, 1000).is_some());
    }
}
