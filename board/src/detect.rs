//! What board this is: SoC, NPU driver version, CPU clusters and the devfreq nodes to tune.
//!
//! Everything is discovered rather than hard-coded, because RK3588 boards differ (RK3588S vs
//! RK3588, binned A76 clusters topping out at 2.256 / 2.352 / 2.4 GHz, bootloaders without a
//! `dmc` node) and because the same code must say "not a Rockchip board" on a laptop.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::sysfs::Sysfs;

/// Where the `rknpu` driver reports its version, in the order tried: debugfs (the vendor
/// guide's `cat /sys/kernel/debug/rknpu/version`; root only), the procfs build of the driver,
/// and the module parameter directory when it is built as a module.
pub const NPU_VERSION_FILES: [&str; 3] =
    ["sys/kernel/debug/rknpu/version", "proc/rknpu/version", "sys/module/rknpu/version"];

const CPUFREQ_DIR: &str = "sys/devices/system/cpu/cpufreq";
const CPU_DIR: &str = "sys/devices/system/cpu";
const DEVFREQ_DIR: &str = "sys/class/devfreq";

/// The SoC, from the device tree's `compatible` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Soc {
    /// RK3588 and RK3588S (same NPU: three cores).
    Rk3588,
    Rk3576,
    Rk3562,
    Rv1126b,
    /// Anything else, carrying the `compatible` entry that named it (e.g. `rockchip,rk3566`).
    Other(String),
}

impl Soc {
    /// Picks the SoC out of a `compatible` list (board first, SoC last by convention). A known
    /// Rockchip SoC anywhere in the list wins; else an unknown `rockchip,*` entry; else the last
    /// entry. `None` for an empty list (no device tree, e.g. x86).
    pub fn from_compatible<S: AsRef<str>>(entries: &[S]) -> Option<Soc> {
        let entries: Vec<&str> = entries.iter().map(|e| e.as_ref()).filter(|e| !e.is_empty()).collect();
        let known = entries.iter().find_map(|e| match e.strip_prefix("rockchip,")? {
            "rk3588" | "rk3588s" => Some(Soc::Rk3588),
            "rk3576" => Some(Soc::Rk3576),
            "rk3562" => Some(Soc::Rk3562),
            "rv1126b" => Some(Soc::Rv1126b),
            _ => None,
        });
        known.or_else(|| {
            let other = entries.iter().find(|e| e.starts_with("rockchip,")).or(entries.last())?;
            Some(Soc::Other((*other).to_owned()))
        })
    }

    /// Lower-case identifier (`rk3588`), or the raw `compatible` entry for [`Soc::Other`].
    /// This is also the serialised form, and matches the `target_platform` of `.rkllm` files.
    pub fn id(&self) -> &str {
        match self {
            Soc::Rk3588 => "rk3588",
            Soc::Rk3576 => "rk3576",
            Soc::Rk3562 => "rk3562",
            Soc::Rv1126b => "rv1126b",
            Soc::Other(s) => s,
        }
    }

    /// The SoCs the RKLLM runtime targets.
    pub fn rkllm_supported(&self) -> bool {
        !matches!(self, Soc::Other(_))
    }

    /// Any Rockchip SoC, supported by RKLLM or not.
    pub fn is_rockchip(&self) -> bool {
        match self {
            Soc::Other(s) => s.starts_with("rockchip,"),
            _ => true,
        }
    }
}

impl fmt::Display for Soc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Soc::Other(s) => f.write_str(s),
            known => f.write_str(&known.id().to_ascii_uppercase()),
        }
    }
}

impl Serialize for Soc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// A `major.minor.patch` version; ordering is numeric, so `0.9.10 > 0.9.8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self { major, minor, patch }
    }

    /// Finds the first `N.N[.N]` (optionally `v`-prefixed) in free text, as the driver prints
    /// it in different places: `RKNPU driver: v0.9.8`, `0.9.8`, `v0.9.8-20240828`.
    pub fn parse_loose(text: &str) -> Option<Version> {
        text.split(|c: char| c.is_whitespace() || c == ':' || c == ',').find_map(|token| {
            let token = token.trim_start_matches(['v', 'V']);
            let mut nums = Vec::with_capacity(3);
            for part in token.split('.').take(3) {
                let digits = &part[..part.bytes().take_while(u8::is_ascii_digit).count()];
                let Ok(n) = digits.parse::<u32>() else { break };
                nums.push(n);
                if digits.len() != part.len() {
                    break;
                }
            }
            (nums.len() >= 2).then(|| Version::new(nums[0], nums[1], nums.get(2).copied().unwrap_or(0)))
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The `rknpu` driver as found on the board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NpuDriver {
    pub version: Version,
    /// The file it was read from, relative to the sysfs root.
    pub source: String,
}

/// One cpufreq policy: a cluster of cores that share a clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuPolicy {
    /// `policy4`, or `cpu4` when found through the per-CPU fallback.
    pub name: String,
    /// Directory holding `scaling_governor` etc., relative to the sysfs root.
    pub dir: String,
    pub cpus: Vec<usize>,
    /// Hardware maximum (`cpuinfo_max_freq`), kHz.
    pub cpuinfo_max_khz: u64,
    /// `scaling_available_frequencies`, kHz, ascending; empty when the driver has no table.
    pub available_khz: Vec<u64>,
    pub available_governors: Vec<String>,
}

impl CpuPolicy {
    /// The frequency tuning pins: the top of the frequency table, else the hardware maximum.
    pub fn target_khz(&self) -> u64 {
        self.available_khz.last().copied().unwrap_or(self.cpuinfo_max_khz)
    }
}

/// A devfreq device (NPU, DDR controller, GPU).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DevfreqNode {
    /// `fdab0000.npu`, `dmc`, `fb000000.gpu`.
    pub name: String,
    /// Relative to the sysfs root.
    pub dir: String,
    /// `available_frequencies`, Hz, ascending.
    pub available_hz: Vec<u64>,
    pub available_governors: Vec<String>,
}

impl DevfreqNode {
    /// The highest available frequency; `None` when the node lists none.
    pub fn target_hz(&self) -> Option<u64> {
        self.available_hz.last().copied()
    }
}

/// Everything `detect` learned. Each field is `None`/empty when the board does not have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoardInfo {
    pub soc: Option<Soc>,
    /// Device-tree `model`, e.g. `Radxa ROCK 5B`.
    pub model: Option<String>,
    pub compatible: Vec<String>,
    pub npu_driver: Option<NpuDriver>,
    /// In policy order (`policy0`, `policy4`, `policy6` on RK3588).
    pub cpu_policies: Vec<CpuPolicy>,
    pub npu: Option<DevfreqNode>,
    pub ddr: Option<DevfreqNode>,
    pub gpu: Option<DevfreqNode>,
}

impl BoardInfo {
    /// Reads the board's facts. Never fails: what cannot be read is absent.
    pub fn detect(fs: &Sysfs) -> BoardInfo {
        let compatible =
            fs.read_raw("proc/device-tree/compatible").map(|raw| parse_compatible(&raw)).unwrap_or_default();
        let (npu, ddr, gpu) = devfreq_nodes(fs);
        BoardInfo {
            soc: Soc::from_compatible(&compatible),
            model: fs.probe("proc/device-tree/model").filter(|m| !m.is_empty()),
            compatible,
            npu_driver: npu_driver(fs),
            cpu_policies: cpu_policies(fs),
            npu,
            ddr,
            gpu,
        }
    }

    /// Bit `n` set for each CPU `n` in the fastest cluster(s): those whose hardware maximum
    /// equals the highest of all. On RK3588 that is the A76 cores 4–7 (`0xF0`); read, not
    /// assumed, since other SoCs and binned parts differ. CPUs ≥ 64 do not fit and are left out.
    pub fn big_core_mask(&self) -> u64 {
        self.big_cores().into_iter().filter(|&c| c < 64).fold(0, |mask, c| mask | (1 << c))
    }

    /// The CPUs of [`BoardInfo::big_core_mask`], ascending. On a machine with one kind of core
    /// that is every core with cpufreq; empty without cpufreq.
    pub fn big_cores(&self) -> Vec<usize> {
        let Some(top) = self.cpu_policies.iter().map(|p| p.cpuinfo_max_khz).max() else {
            return Vec::new();
        };
        let mut cpus: Vec<usize> = self
            .cpu_policies
            .iter()
            .filter(|p| p.cpuinfo_max_khz == top)
            .flat_map(|p| p.cpus.iter().copied())
            .collect();
        cpus.sort_unstable();
        cpus.dedup();
        cpus
    }

    /// True on a SoC the RKLLM runtime supports; the NPU checks only matter there.
    pub fn has_rkllm_soc(&self) -> bool {
        self.soc.as_ref().is_some_and(Soc::rkllm_supported)
    }
}

/// Splits the device tree's NUL-separated string list.
pub(crate) fn parse_compatible(raw: &[u8]) -> Vec<String> {
    raw.split(|&b| b == 0).map(|s| String::from_utf8_lossy(s).trim().to_owned()).filter(|s| !s.is_empty()).collect()
}

/// Parses a kernel CPU list: `0 1 2 3` (cpufreq's `related_cpus`) or `0-3,6` (cpumask lists).
pub(crate) fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for piece in text.split(|c: char| c.is_whitespace() || c == ',').filter(|p| !p.is_empty()) {
        match piece.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    cpus.extend(a..=b);
                }
            }
            None => cpus.extend(piece.parse::<usize>().ok()),
        }
    }
    cpus
}

/// Whitespace-separated numbers, sorted ascending (drivers list them either way).
pub(crate) fn parse_freq_list(text: &str) -> Vec<u64> {
    let mut freqs: Vec<u64> = text.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    freqs.sort_unstable();
    freqs.dedup();
    freqs
}

fn words(text: Option<String>) -> Vec<String> {
    text.map(|t| t.split_whitespace().map(str::to_owned).collect()).unwrap_or_default()
}

fn npu_driver(fs: &Sysfs) -> Option<NpuDriver> {
    NPU_VERSION_FILES.iter().find_map(|rel| {
        let version = Version::parse_loose(&fs.probe(rel)?)?;
        Some(NpuDriver { version, source: (*rel).to_owned() })
    })
}

/// cpufreq policies from `cpufreq/policy*`, or from `cpuN/cpufreq` on kernels without policy
/// directories.
pub(crate) fn cpu_policies(fs: &Sysfs) -> Vec<CpuPolicy> {
    let policies: Vec<CpuPolicy> = fs
        .numbered(CPUFREQ_DIR, "policy")
        .into_iter()
        .filter_map(|(n, name)| {
            let dir = format!("{CPUFREQ_DIR}/{name}");
            let cpus = fs
                .probe(&format!("{dir}/related_cpus"))
                .or_else(|| fs.probe(&format!("{dir}/affected_cpus")))
                .map(|t| parse_cpu_list(&t))
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| vec![n]);
            read_policy(fs, name, dir, cpus)
        })
        .collect();
    if !policies.is_empty() {
        return policies;
    }
    fs.numbered(CPU_DIR, "cpu")
        .into_iter()
        .filter_map(|(n, name)| read_policy(fs, name.clone(), format!("{CPU_DIR}/{name}/cpufreq"), vec![n]))
        .collect()
}

fn read_policy(fs: &Sysfs, name: String, dir: String, cpus: Vec<usize>) -> Option<CpuPolicy> {
    let available_khz = fs.probe(&format!("{dir}/scaling_available_frequencies")).map(|t| parse_freq_list(&t));
    let available_khz = available_khz.unwrap_or_default();
    let cpuinfo_max_khz = fs.probe_u64(&format!("{dir}/cpuinfo_max_freq")).or_else(|| available_khz.last().copied())?;
    let available_governors = words(fs.probe(&format!("{dir}/scaling_available_governors")));
    Some(CpuPolicy { name, dir, cpus, cpuinfo_max_khz, available_khz, available_governors })
}

/// The first NPU (`*.npu`), DDR (`dmc`) and GPU (`*.gpu`) devfreq devices.
pub(crate) fn devfreq_nodes(fs: &Sysfs) -> (Option<DevfreqNode>, Option<DevfreqNode>, Option<DevfreqNode>) {
    let names = fs.list(DEVFREQ_DIR);
    let find = |pred: &dyn Fn(&str) -> bool| {
        let name = names.iter().find(|n| pred(n))?;
        let dir = format!("{DEVFREQ_DIR}/{name}");
        Some(DevfreqNode {
            available_hz: fs
                .probe(&format!("{dir}/available_frequencies"))
                .map(|t| parse_freq_list(&t))
                .unwrap_or_default(),
            available_governors: words(fs.probe(&format!("{dir}/available_governors"))),
            name: name.clone(),
            dir,
        })
    };
    (find(&|n| n.ends_with(".npu")), find(&|n| n == "dmc" || n.ends_with(".dmc")), find(&|n| n.ends_with(".gpu")))
}

/// The CPU numbers with a `cpuN` directory (each has its own `cpuidle` states).
pub(crate) fn cpu_numbers(fs: &Sysfs) -> Vec<usize> {
    fs.numbered(CPU_DIR, "cpu").into_iter().map(|(n, _)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soc_from_compatible() {
        assert_eq!(Soc::from_compatible(&["radxa,rock-5b", "rockchip,rk3588"]), Some(Soc::Rk3588));
        assert_eq!(Soc::from_compatible(&["xunlong,orangepi-5", "rockchip,rk3588s"]), Some(Soc::Rk3588));
        assert_eq!(Soc::from_compatible(&["rockchip,rk3576-evb", "rockchip,rk3576"]), Some(Soc::Rk3576));
        let rk3566 = Soc::from_compatible(&["pine64,quartz64-a", "rockchip,rk3566"]).unwrap();
        assert_eq!(rk3566, Soc::Other("rockchip,rk3566".into()));
        assert!(rk3566.is_rockchip() && !rk3566.rkllm_supported());
        let bcm = Soc::from_compatible(&["raspberrypi,5-model-b", "brcm,bcm2712"]).unwrap();
        assert!(!bcm.is_rockchip());
        assert_eq!(Soc::from_compatible::<&str>(&[]), None);
        assert_eq!(Soc::Rk3588.to_string(), "RK3588");
    }

    #[test]
    fn compatible_is_nul_separated() {
        assert_eq!(parse_compatible(b"radxa,rock-5b\0rockchip,rk3588\0"), ["radxa,rock-5b", "rockchip,rk3588"]);
    }

    #[test]
    fn driver_versions() {
        assert_eq!(Version::parse_loose("RKNPU driver: v0.9.8"), Some(Version::new(0, 9, 8)));
        assert_eq!(Version::parse_loose("0.9.6\n"), Some(Version::new(0, 9, 6)));
        assert_eq!(Version::parse_loose("v0.9.8-20240828"), Some(Version::new(0, 9, 8)));
        assert_eq!(Version::parse_loose("rknpu 1.2"), Some(Version::new(1, 2, 0)));
        assert_eq!(Version::parse_loose("RKNPU driver: unknown"), None);
        assert!(Version::new(0, 9, 10) > Version::new(0, 9, 8));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0 1 2 3"), [0, 1, 2, 3]);
        assert_eq!(parse_cpu_list("4-5,7"), [4, 5, 7]);
        assert!(parse_cpu_list("").is_empty());
    }

    #[test]
    fn freq_lists_sorted() {
        assert_eq!(parse_freq_list("1800000 408000 1008000 "), [408000, 1008000, 1800000]);
    }
}
