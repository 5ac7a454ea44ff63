//! The node's own CPU, memory, disk and network.
//!
//! CPU and memory come from `sysinfo` (`/proc/stat`, `/proc/meminfo`; with `hostPID` these are the
//! host's). sysinfo reads fixed paths, so the two readings that must look through the DaemonSet's
//! host mounts are done here: disk usage is one `statvfs` of `--root-fs` (the host's `/`, mounted at
//! `/host/root`), and network bytes are read from `--sys-root` (`/host/sys/class/net`, the host's
//! network namespace; the container's own `/sys` shows only the pod's interfaces).
//!
//! Units follow MLflow's system metrics: megabytes are 10^6 bytes; memory "used" is total minus
//! available (sysinfo's definition; psutil's `used` also leaves out buffers and page cache).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// One reading of the node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostReading {
    /// Busy share of all CPUs since the previous reading, 0–100.
    pub cpu_utilization_percent: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// `None` when `--root-fs` cannot be read.
    pub disk: Option<DiskUsage>,
    /// Bytes since the node booted, summed over the counted interfaces, never decreasing; `None`
    /// when `--sys-root` has no network interfaces.
    pub network: Option<NetworkTotals>,
}

/// Usage of one filesystem, as `df` (and psutil) count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskUsage {
    /// Blocks in use (total minus free), bytes.
    pub used_bytes: u64,
    /// Blocks an unprivileged user may still take, bytes.
    pub available_bytes: u64,
}

impl DiskUsage {
    /// `used / (used + available)`, as psutil's `percent`.
    pub fn used_percent(&self) -> f64 {
        let denominator = self.used_bytes.saturating_add(self.available_bytes);
        if denominator == 0 {
            0.0
        } else {
            self.used_bytes as f64 / denominator as f64 * 100.0
        }
    }
}

/// `statvfs` of `path`.
pub fn disk_usage(path: &Path) -> Option<DiskUsage> {
    let stat = rustix::fs::statvfs(path).ok()?;
    let block = stat.f_frsize;
    Some(DiskUsage {
        used_bytes: stat.f_blocks.saturating_sub(stat.f_bfree).saturating_mul(block),
        available_bytes: stat.f_bavail.saturating_mul(block),
    })
}

// === network ===

/// Received and transmitted bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkTotals {
    pub receive_bytes: u64,
    pub transmit_bytes: u64,
}

/// One interface's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// Backed by a device (`/sys/class/net/<if>/device` exists); veth pairs, bridges, tunnels and
    /// loopback are not.
    pub physical: bool,
    pub receive_bytes: u64,
    pub transmit_bytes: u64,
}

/// The interfaces under `<sys_root>/class/net`, loopback left out.
pub fn read_sysfs_interfaces(sys_root: &Path) -> Vec<Interface> {
    let Ok(entries) = fs::read_dir(sys_root.join("class/net")) else {
        return Vec::new();
    };
    let mut interfaces: Vec<Interface> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            if name == "lo" {
                return None;
            }
            let dir = entry.path();
            let read = |counter: &str| -> Option<u64> {
                fs::read_to_string(dir.join("statistics").join(counter))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            };
            Some(Interface {
                physical: dir.join("device").exists(),
                receive_bytes: read("rx_bytes")?,
                transmit_bytes: read("tx_bytes")?,
                name,
            })
        })
        .collect();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    interfaces
}

/// Parses `/proc/<pid>/net/dev` (one network namespace), loopback left out.
pub fn parse_proc_net_dev(text: &str) -> Vec<Interface> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let fields: Vec<u64> = counters
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            Some(Interface {
                name: name.to_owned(),
                physical: false,
                receive_bytes: *fields.first()?,
                transmit_bytes: *fields.get(8)?,
            })
        })
        .collect()
}

/// Turns per-interface counters, which reset and come and go, into one never-decreasing total.
///
/// Physical interfaces are counted when the node has any (so a pod's traffic is not counted twice:
/// once on its veth, once on the uplink); otherwise every interface but loopback.
#[derive(Debug, Default)]
pub struct NetworkCounter {
    last: HashMap<String, (u64, u64)>,
    totals: NetworkTotals,
}

impl NetworkCounter {
    /// Adds what each interface moved since the last call; returns the totals.
    pub fn update(&mut self, interfaces: &[Interface]) -> NetworkTotals {
        let any_physical = interfaces.iter().any(|i| i.physical);
        let mut seen = HashMap::with_capacity(interfaces.len());
        for interface in interfaces.iter().filter(|i| i.physical || !any_physical) {
            let now = (interface.receive_bytes, interface.transmit_bytes);
            let (rx, tx) = match self.last.get(&interface.name) {
                // A counter that went down was reset (driver reload): all of it is new.
                Some(&(rx, tx)) => (
                    if now.0 >= rx { now.0 - rx } else { now.0 },
                    if now.1 >= tx { now.1 - tx } else { now.1 },
                ),
                None => now,
            };
            self.totals.receive_bytes = self.totals.receive_bytes.saturating_add(rx);
            self.totals.transmit_bytes = self.totals.transmit_bytes.saturating_add(tx);
            seen.insert(interface.name.clone(), now);
        }
        self.last = seen;
        self.totals
    }
}

// === impl HostSampler ===

/// Reads the node; each [`sample`](HostSampler::sample) covers the time since the previous one.
pub struct HostSampler {
    system: System,
    sys_root: PathBuf,
    root_fs: PathBuf,
    network: NetworkCounter,
}

impl HostSampler {
    pub fn new(sys_root: PathBuf, root_fs: PathBuf) -> Result<HostSampler, sysinfo::Error> {
        // The first CPU refresh sets the baseline that the first sample is measured against.
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        )?;
        Ok(HostSampler {
            system,
            sys_root,
            root_fs,
            network: NetworkCounter::default(),
        })
    }

    pub fn sample(&mut self) -> HostReading {
        self.system.refresh_cpu_usage();
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let interfaces = read_sysfs_interfaces(&self.sys_root);
        let network = (!interfaces.is_empty()).then(|| self.network.update(&interfaces));
        HostReading {
            // sysinfo computes in f32: two decimals is all the precision there is.
            cpu_utilization_percent: ((f64::from(self.system.global_cpu_usage()) * 100.0).round() / 100.0)
                .clamp(0.0, 100.0),
            memory_used_bytes: self.system.used_memory(),
            memory_total_bytes: self.system.total_memory(),
            disk: disk_usage(&self.root_fs),
            network,
        }
    }

    /// Total memory of the node, bytes (for the share of a pod without a limit).
    pub fn memory_total_bytes(&self) -> u64 {
        self.system.total_memory()
    }
}

/// Logical CPUs of the node (the denominator of a pod's CPU share when it has no limit).
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interface(name: &str, physical: bool, rx: u64, tx: u64) -> Interface {
        Interface {
            name: name.to_owned(),
            physical,
            receive_bytes: rx,
            transmit_bytes: tx,
        }
    }

    #[test]
    fn the_network_total_never_decreases_and_counts_physical_interfaces_only() {
        let mut counter = NetworkCounter::default();
        let first = counter.update(&[
            interface("eth0", true, 1_000, 500),
            interface("veth1", false, 70, 70),
        ]);
        assert_eq!(
            first,
            NetworkTotals {
                receive_bytes: 1_000,
                transmit_bytes: 500
            }
        );
        // eth0 moves on; a second NIC appears with its lifetime counters.
        let second = counter.update(&[
            interface("eth0", true, 1_500, 800),
            interface("eth1", true, 10, 20),
        ]);
        assert_eq!(
            second,
            NetworkTotals {
                receive_bytes: 1_510,
                transmit_bytes: 820
            }
        );
        // eth1 disappears and eth0's driver is reloaded (counters restart): the total still grows.
        let third = counter.update(&[interface("eth0", true, 40, 30)]);
        assert_eq!(
            third,
            NetworkTotals {
                receive_bytes: 1_550,
                transmit_bytes: 850
            }
        );
    }

    #[test]
    fn without_physical_interfaces_every_interface_counts() {
        let mut counter = NetworkCounter::default();
        let totals = counter.update(&[interface("eth0", false, 5, 6), interface("cni0", false, 1, 1)]);
        assert_eq!(
            totals,
            NetworkTotals {
                receive_bytes: 6,
                transmit_bytes: 7
            }
        );
    }

    #[test]
    fn sysfs_interfaces_from_a_fixture_tree() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("class/net");
        for (name, physical, rx, tx) in [
            ("lo", false, 9, 9),
            ("eth0", true, 100, 200),
            ("veth0", false, 3, 4),
        ] {
            let stats = net.join(name).join("statistics");
            fs::create_dir_all(&stats).unwrap();
            fs::write(stats.join("rx_bytes"), format!("{rx}\n")).unwrap();
            fs::write(stats.join("tx_bytes"), format!("{tx}\n")).unwrap();
            if physical {
                fs::create_dir_all(net.join(name).join("device")).unwrap();
            }
        }
        assert_eq!(
            read_sysfs_interfaces(dir.path()),
            vec![interface("eth0", true, 100, 200), interface("veth0", false, 3, 4)]
        );
        assert!(read_sysfs_interfaces(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn proc_net_dev_of_a_pod() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  \
             eth0: 5000000    4000    0    0    0     0          0         0  2000000    3000    0    0    0     0       0          0\n";
        assert_eq!(
            parse_proc_net_dev(text),
            vec![interface("eth0", false, 5_000_000, 2_000_000)]
        );
    }

    #[test]
    fn disk_usage_of_the_root_filesystem() {
        let usage = disk_usage(Path::new("/")).unwrap();
        assert!(usage.used_bytes > 0);
        assert!((0.0..=100.0).contains(&usage.used_percent()));
        assert!(disk_usage(Path::new("/definitely/not/here")).is_none());
    }

    #[test]
    fn a_host_sample_has_cpu_memory_and_disk() {
        let mut sampler = HostSampler::new(PathBuf::from("/sys"), PathBuf::from("/")).unwrap();
        let reading = sampler.sample();
        assert!(reading.memory_total_bytes > 0);
        assert!(reading.memory_used_bytes <= reading.memory_total_bytes);
        assert!((0.0..=100.0).contains(&reading.cpu_utilization_percent));
        assert!(reading.disk.is_some());
    }
}
