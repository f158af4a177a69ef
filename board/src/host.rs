//! Host facts that are not RK3588-specific: memory, CPU count, and the free space of the
//! filesystem holding the model store.
//!
//! On a real root (`/`) they come from `sysinfo`, so the agent's CPU engine also runs where there
//! is no `/proc` (a developer's macOS laptop). Under any other root — a fixture tree standing in
//! for a board — memory and CPU count come from that tree's `proc/meminfo` and
//! `sys/devices/system/cpu/possible`, so every simulated board reports its own RAM, not the
//! host's. Disk space is always the real filesystem's: the store is a real directory.

use std::path::Path;

use serde::Serialize;

use crate::Sysfs;

/// Memory and CPUs of the machine (or of the simulated board under a fixture root).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    /// Total RAM in bytes.
    pub mem_total_bytes: u64,
    /// RAM available for new allocations (`MemAvailable`), in bytes.
    pub mem_available_bytes: u64,
    /// Logical CPUs.
    pub cpus: usize,
}

/// Size and free space of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DiskSpace {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

impl HostFacts {
    /// Reads the facts under `fs`'s root; see the module docs for where they come from.
    pub fn read(fs: &Sysfs) -> Self {
        if fs.root == Path::new("/") { Self::from_system() } else { Self::from_tree(fs) }
    }

    fn from_system() -> Self {
        let mut sys = sysinfo::System::new();
        sys.refresh_memory();
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self { mem_total_bytes: sys.total_memory(), mem_available_bytes: sys.available_memory(), cpus }
    }

    fn from_tree(fs: &Sysfs) -> Self {
        let (total, available) = fs.probe("proc/meminfo").map(|t| parse_meminfo(&t)).unwrap_or((0, 0));
        let cpus = fs.probe("sys/devices/system/cpu/possible").and_then(|s| count_cpu_list(&s)).unwrap_or(0);
        Self { mem_total_bytes: total, mem_available_bytes: available, cpus }
    }
}

impl DiskSpace {
    /// The filesystem holding `path`: the mounted disk whose mount point is the longest prefix of
    /// the (canonical) path. `None` when no disk matches (an unusual mount setup).
    pub fn of(path: &Path) -> Option<Self> {
        let path = path.canonicalize().ok()?;
        let disks = sysinfo::Disks::new_with_refreshed_list();
        disks
            .list()
            .iter()
            .filter(|d| path.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len())
            .map(|d| Self { total_bytes: d.total_space(), available_bytes: d.available_space() })
    }
}

/// `MemTotal` and `MemAvailable` of a `/proc/meminfo` text, in bytes (0 when absent).
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// Number of CPUs in a kernel CPU list such as `0-7` or `0-3,6,8-9`.
pub fn count_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.trim().parse::<usize>().ok()?.checked_sub(a.trim().parse::<usize>().ok()?)? + 1,
            None => {
                part.trim().parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_cpu_lists() {
        let t = "MemTotal:       16106128 kB\nMemFree:  100 kB\nMemAvailable:   12000000 kB\n";
        assert_eq!(parse_meminfo(t), (16_106_128 * 1024, 12_000_000 * 1024));
        assert_eq!(parse_meminfo("nonsense"), (0, 0));
        assert_eq!(count_cpu_list("0-7\n"), Some(8));
        assert_eq!(count_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn the_real_root_reports_something() {
        let h = HostFacts::read(&Sysfs::new("/"));
        assert!(h.mem_total_bytes > 0 && h.cpus > 0, "{h:?}");
        assert!(DiskSpace::of(Path::new(".")).is_some_and(|d| d.total_bytes > 0));
    }
}
