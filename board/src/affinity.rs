//! Pinning the calling thread to the big cores. Threads inherit the affinity of the thread that
//! creates them, so pinning an engine's worker thread before it starts its compute threads keeps
//! the whole engine on the fast cluster (the vendor demos pin RKLLM to CPUs 4–7 the same way,
//! through `enabled_cpus_mask`).

use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

/// Restricts the calling thread to those of `cpus` it may run on now; returns them. An error
/// (and no change) when none of `cpus` is available, e.g. the board's big-core numbers on a
/// smaller test machine.
pub fn pin_current_thread(cpus: &[usize]) -> Result<Vec<usize>, String> {
    let allowed = sched_getaffinity(None).map_err(|e| format!("sched_getaffinity: {e}"))?;
    let usable: Vec<usize> = cpus.iter().copied().filter(|&c| c < CpuSet::MAX_CPU && allowed.is_set(c)).collect();
    if usable.is_empty() {
        return Err(format!("none of CPUs {cpus:?} is available to this process"));
    }
    let mut set = CpuSet::new();
    usable.iter().for_each(|&c| set.set(c));
    sched_setaffinity(None, &set).map_err(|e| format!("sched_setaffinity: {e}"))?;
    Ok(usable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_to_available_cpus_only() {
        // On a thread of its own so the test runner's threads keep their affinity.
        std::thread::spawn(|| {
            let before = sched_getaffinity(None).unwrap();
            let first = (0..CpuSet::MAX_CPU).find(|&c| before.is_set(c)).unwrap();
            assert_eq!(pin_current_thread(&[first, CpuSet::MAX_CPU + 5]).unwrap(), vec![first]);
            assert!(sched_getaffinity(None).unwrap().is_set(first));
            assert!(pin_current_thread(&[CpuSet::MAX_CPU + 1]).is_err());
        })
        .join()
        .unwrap();
    }
}
