//! NPU memory domains (`base_domain_id`): which domain a new RKLLM instance goes into.
//!
//! The runtime maps a model's weights into one domain of roughly 4 GB (docs/rkllm-abi.md §15);
//! two instances in one domain that do not fit make `rkllm_init` fail — or, on RKLLM 1.3.0,
//! crash the process (rknn-llm #522). So the engine books every instance's bytes
//! here before calling `rkllm_init` and releases them when the instance is destroyed: a model
//! goes to the least-used domain with room, and when none has room the load is refused with
//! [`EngineError::NpuFull`], which tells the scheduler that evicting an idle NPU model may help.

use std::sync::{Arc, Mutex};

use crate::engine::EngineError;

/// Where a model of `need` bytes goes, given the bytes and instance count booked per domain:
/// the domain with room holding the fewest instances (lowest id on a tie). Pure.
pub fn choose(booked: &[(u64, usize)], need: u64, budget: u64) -> Result<i32, EngineError> {
    if need > budget {
        return Err(EngineError::NpuTooLarge { need, budget });
    }
    booked
        .iter()
        .enumerate()
        .filter(|(_, (bytes, _))| bytes + need <= budget)
        .min_by_key(|(d, (_, count))| (*count, *d))
        .map(|(d, _)| d as i32)
        .ok_or(EngineError::NpuFull { need })
}

/// The bookings of one agent's NPU.
#[derive(Debug)]
pub struct Domains {
    budget: u64,
    booked: Mutex<Vec<(u64, usize)>>,
}

/// Bytes booked in one domain; released on drop (after the instance's `rkllm_destroy`).
#[derive(Debug)]
pub struct Booking {
    domains: Arc<Domains>,
    pub domain: i32,
    bytes: u64,
}

impl Domains {
    pub fn new(count: u32, budget: u64) -> Arc<Self> {
        Arc::new(Self { budget, booked: Mutex::new(vec![(0, 0); count.max(1) as usize]) })
    }

    /// Books `need` bytes in the domain [`choose`] picks.
    pub fn book(self: &Arc<Self>, need: u64) -> Result<Booking, EngineError> {
        let mut booked = self.booked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let domain = choose(&booked, need, self.budget)?;
        let slot = &mut booked[domain as usize];
        slot.0 += need;
        slot.1 += 1;
        Ok(Booking { domains: Arc::clone(self), domain, bytes: need })
    }
}

impl Drop for Booking {
    fn drop(&mut self) {
        let mut booked = self.domains.booked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = booked.get_mut(self.domain as usize) {
            slot.0 = slot.0.saturating_sub(self.bytes);
            slot.1 = slot.1.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn least_used_domain_with_room() {
        assert_eq!(choose(&[(0, 0), (0, 0)], GIB, 4 * GIB).unwrap(), 0, "ties go to the lowest id");
        assert_eq!(choose(&[(GIB, 1), (0, 0)], GIB, 4 * GIB).unwrap(), 1, "spread over domains");
        assert_eq!(choose(&[(3 * GIB, 1), (GIB, 2)], GIB, 4 * GIB).unwrap(), 0, "fewest instances, not fewest bytes");
        assert!(choose(&[(3 * GIB, 1), (4 * GIB, 1)], 2 * GIB, 4 * GIB).unwrap_err().is_capacity());
        assert!(matches!(choose(&[(0, 0)], 5 * GIB, 4 * GIB), Err(EngineError::NpuTooLarge { .. })));
    }

    #[test]
    fn bookings_are_released_on_drop() {
        let d = Domains::new(2, 4 * GIB);
        let a = d.book(3 * GIB).unwrap();
        let b = d.book(3 * GIB).unwrap();
        assert_eq!((a.domain, b.domain), (0, 1));
        assert!(d.book(2 * GIB).is_err(), "neither domain has 2 GiB left");
        drop(a);
        assert_eq!(d.book(2 * GIB).unwrap().domain, 0);
    }
}
