//! From a host PID to its pod, and from a pod to its own CPU and memory accounting.
//!
//! `/proc/<pid>/cgroup` names the cgroup of a process. The kubelet puts every pod in a cgroup whose
//! name carries the pod UID, and the container runtime puts each container below it in a cgroup
//! whose name carries the container ID. The names depend on three choices, all handled here:
//!
//! | | systemd cgroup driver | cgroupfs driver |
//! | --- | --- | --- |
//! | pod | `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice` | `kubepods/burstable/pod<uid>` |
//! | containerd | `cri-containerd-<id>.scope` | `<id>` |
//! | CRI-O | `crio-<id>.scope` (`crio-conmon-<id>.scope` for its monitor) | `crio-<id>` |
//! | Docker (cri-dockerd) | `docker-<id>.scope` | `<id>` |
//!
//! Guaranteed pods have no QoS level (`kubepods-pod<uid>.slice`, `kubepods/pod<uid>`). On cgroup v1
//! the file has one line per hierarchy (`4:memory:/kubepods/…`), on v2 one line (`0::/kubepods…`). A
//! reader in its own cgroup namespace (a container) sees paths outside it as `/../../kubepods…`, so
//! the parser looks at path segments, not at the prefix.
//!
//! A pod's cgroup directory is then found by a short walk under the cgroup mount (only through
//! the kubelet's directories: `kubepods*`, `kubelet*`, `burstable`, `besteffort`), and read for CPU time (`cpu.stat` `usage_usec` on v2,
//! `cpuacct.usage` on v1), working-set memory (usage minus inactive file cache, as the kubelet and
//! `kubectl top` count it) and limits.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where a process sits in Kubernetes, as its cgroup path says.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CgroupRef {
    /// The pod UID, with dashes (`1b2c3d4e-…`).
    pub pod_uid: String,
    /// The container ID as the runtime reports it in `containerStatuses[].containerID` (without the
    /// `containerd://` prefix); `None` for a process in the pod cgroup itself.
    pub container_id: Option<String>,
}

/// Reads `/proc/<pid>/cgroup` below `proc_root`. `Ok(None)`: the process is not in a pod.
pub fn read_pid(proc_root: &Path, pid: u32) -> io::Result<Option<CgroupRef>> {
    let text = fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))?;
    Ok(parse_proc_cgroup(&text))
}

/// Parses the contents of `/proc/<pid>/cgroup` (v1 or v2).
pub fn parse_proc_cgroup(text: &str) -> Option<CgroupRef> {
    // v2 first (`0::`), then the v1 hierarchies that every Kubernetes node has; all name the same
    // pod and container, but a v1 line of a hierarchy the runtime does not manage may not.
    let mut fallback = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Some(found) = parse_path(path) else {
            continue;
        };
        let preferred = controllers.is_empty()
            || controllers
                .split(',')
                .any(|c| matches!(c, "memory" | "cpu" | "cpuacct" | "pids"));
        if preferred && found.container_id.is_some() {
            return Some(found);
        }
        if fallback
            .as_ref()
            .is_none_or(|f: &CgroupRef| f.container_id.is_none() && found.container_id.is_some())
        {
            fallback = Some(found);
        }
    }
    fallback
}

/// Parses one cgroup path: the pod UID from the segment that names the pod, the container ID from
/// the segment right below it.
pub fn parse_path(path: &str) -> Option<CgroupRef> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty() && *s != "..").collect();
    let (pod_at, pod_uid) = segments
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, segment)| pod_uid_in(segment).map(|uid| (i, uid)))?;
    let container_id = segments.get(pod_at + 1).and_then(|s| container_id_in(s));
    Some(CgroupRef {
        pod_uid,
        container_id,
    })
}

/// The pod UID in a segment such as `pod1b2c…`, `kubepods-burstable-pod1b2c…_….slice`.
fn pod_uid_in(segment: &str) -> Option<String> {
    let name = segment.strip_suffix(".slice").unwrap_or(segment);
    let at = name.rfind("pod")?;
    // The segment must be the pod's own: `pod<uid>` alone, or a systemd name ending in `-pod<uid>`.
    if at > 0 && !name[..at].ends_with('-') {
        return None;
    }
    let candidate = &name[at + 3..];
    is_uid(candidate).then(|| candidate.replace('_', "-"))
}

/// A UUID with `-` or `_` between its groups (8-4-4-4-12 hex digits).
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split(['-', '_']).collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The container ID in a segment: `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `crio-conmon-<id>.scope`, `docker-<id>.scope`, `crio-<id>` or a bare `<id>` (64 hex digits).
fn container_id_in(segment: &str) -> Option<String> {
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    let id = [
        "cri-containerd-",
        "crio-conmon-",
        "crio-",
        "docker-",
        "containerd-",
    ]
    .iter()
    .find_map(|prefix| name.strip_prefix(prefix))
    .unwrap_or(name);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

// === impl Cgroups ===

/// The host's cgroup mount, as seen through `--cgroup-root`.
#[derive(Clone, Debug)]
pub enum Cgroups {
    /// The unified hierarchy (one tree for every controller).
    V2 { root: PathBuf },
    /// One tree per controller; `cpuacct` for usage, `cpu` for the CFS quota, `memory`.
    V1 {
        cpuacct: Option<PathBuf>,
        cpu: Option<PathBuf>,
        memory: Option<PathBuf>,
    },
}

/// How deep below the mount a pod's directory may be (`kubelet.slice/kubelet-kubepods.slice/
/// kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod….slice` is 4).
const MAX_POD_DEPTH: usize = 5;

impl Cgroups {
    /// Recognises the layout under `root` (usually `/sys/fs/cgroup`); `None` when there is none.
    pub fn detect(root: &Path) -> Option<Cgroups> {
        if root.join("cgroup.controllers").is_file() {
            return Some(Cgroups::V2 {
                root: root.to_owned(),
            });
        }
        let mut cpuacct = None;
        let mut cpu = None;
        let mut memory = None;
        let mut entries: Vec<(String, PathBuf)> = fs::read_dir(root)
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .collect();
        // Real directories (`cpu,cpuacct`) sort before their symlinks (`cpu`, `cpuacct`) only by
        // chance; either one works, so take the first by name for a stable choice.
        entries.sort();
        for (name, path) in entries {
            if !path.is_dir() {
                continue;
            }
            for controller in name.split(',') {
                let slot = match controller {
                    "cpuacct" => &mut cpuacct,
                    "cpu" => &mut cpu,
                    "memory" => &mut memory,
                    _ => continue,
                };
                if slot.is_none() {
                    *slot = Some(path.clone());
                }
            }
        }
        if cpuacct.is_none() && memory.is_none() {
            return None;
        }
        Some(Cgroups::V1 { cpuacct, cpu, memory })
    }

    /// Which cgroup version this is, for log lines.
    pub fn version(&self) -> u8 {
        match self {
            Cgroups::V2 { .. } => 2,
            Cgroups::V1 { .. } => 1,
        }
    }

    /// The directories of the pod with this UID; `None` when it has none on this node (yet).
    pub fn find_pod(&self, pod_uid: &str) -> Option<PodCgroup> {
        match self {
            Cgroups::V2 { root } => {
                let dir = find_pod_dir(root, pod_uid)?;
                Some(PodCgroup::V2 { dir })
            }
            Cgroups::V1 { cpuacct, cpu, memory } => {
                let find = |root: &Option<PathBuf>| root.as_deref().and_then(|r| find_pod_dir(r, pod_uid));
                let cpuacct = find(cpuacct);
                let memory = find(memory);
                if cpuacct.is_none() && memory.is_none() {
                    return None;
                }
                Some(PodCgroup::V1 {
                    cpuacct,
                    cpu: find(cpu),
                    memory,
                })
            }
        }
    }
}

/// Breadth-first search for the directory naming `pod_uid`, descending only through the kubelet's
/// own directories.
fn find_pod_dir(root: &Path, pod_uid: &str) -> Option<PathBuf> {
    let mut level = vec![root.to_owned()];
    for _ in 0..MAX_POD_DEPTH {
        let mut next = Vec::new();
        for dir in level {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if pod_uid_in(&name).is_some_and(|uid| uid == pod_uid) {
                    return Some(entry.path());
                }
                // systemd: kubepods.slice, kubepods-burstable.slice, kubelet.slice (kind);
                // cgroupfs: kubepods, kubepods/burstable, kubepods/besteffort.
                if name.starts_with("kubepods")
                    || name.starts_with("kubelet")
                    || name == "burstable"
                    || name == "besteffort"
                {
                    next.push(entry.path());
                }
            }
        }
        if next.is_empty() {
            return None;
        }
        level = next;
    }
    None
}

// === impl PodCgroup ===

/// One pod's cgroup directories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodCgroup {
    V2 {
        dir: PathBuf,
    },
    V1 {
        cpuacct: Option<PathBuf>,
        cpu: Option<PathBuf>,
        memory: Option<PathBuf>,
    },
}

/// A pod's memory as the kubelet counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodMemory {
    /// Usage minus inactive file cache (the working set), bytes.
    pub working_set_bytes: u64,
    /// The pod's memory limit, bytes; `None` when unlimited.
    pub limit_bytes: Option<u64>,
}

/// Above this a v1 `memory.limit_in_bytes` means "no limit" (it is `PAGE_COUNTER_MAX` pages).
const V1_UNLIMITED: u64 = 1 << 60;

impl PodCgroup {
    /// CPU time used by every process of the pod since it started, microseconds.
    pub fn cpu_usage_usec(&self) -> io::Result<u64> {
        match self {
            PodCgroup::V2 { dir } => {
                let stat = fs::read_to_string(dir.join("cpu.stat"))?;
                stat_value(&stat, "usage_usec").ok_or_else(|| invalid("cpu.stat has no usage_usec"))
            }
            PodCgroup::V1 { cpuacct, .. } => {
                let dir = cpuacct.as_ref().ok_or_else(|| missing("cpuacct"))?;
                Ok(read_u64(&dir.join("cpuacct.usage"))? / 1_000)
            }
        }
    }

    /// The pod's CPU limit in cores (CFS quota / period); `None` when unlimited.
    pub fn cpu_limit_cores(&self) -> Option<f64> {
        let (quota, period) = match self {
            PodCgroup::V2 { dir } => {
                let max = fs::read_to_string(dir.join("cpu.max")).ok()?;
                let mut fields = max.split_whitespace();
                let quota = fields.next()?.parse::<f64>().ok()?; // "max" does not parse: unlimited
                (quota, fields.next()?.parse::<f64>().ok()?)
            }
            PodCgroup::V1 { cpu, .. } => {
                let dir = cpu.as_ref()?;
                let quota: i64 = fs::read_to_string(dir.join("cpu.cfs_quota_us"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                let period: i64 = fs::read_to_string(dir.join("cpu.cfs_period_us"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                (quota as f64, period as f64) // quota -1: unlimited, refused below
            }
        };
        (quota > 0.0 && period > 0.0).then(|| quota / period)
    }

    /// The pod's working-set memory and limit.
    pub fn memory(&self) -> io::Result<PodMemory> {
        let (dir, usage_file, inactive_key, limit_file) = match self {
            PodCgroup::V2 { dir } => (dir, "memory.current", "inactive_file", "memory.max"),
            PodCgroup::V1 { memory, .. } => (
                memory.as_ref().ok_or_else(|| missing("memory"))?,
                "memory.usage_in_bytes",
                "total_inactive_file",
                "memory.limit_in_bytes",
            ),
        };
        let usage = read_u64(&dir.join(usage_file))?;
        let inactive = fs::read_to_string(dir.join("memory.stat"))
            .ok()
            .and_then(|stat| stat_value(&stat, inactive_key))
            .unwrap_or(0);
        let limit_bytes = fs::read_to_string(dir.join(limit_file))
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok()) // v2 "max" does not parse: unlimited
            .filter(|&limit| limit < V1_UNLIMITED);
        Ok(PodMemory {
            working_set_bytes: usage.saturating_sub(inactive),
            limit_bytes,
        })
    }

    /// A process of the pod (any: they share the pod's network namespace), from the `cgroup.procs`
    /// of the pod's cgroup or of a container cgroup below it.
    pub fn any_pid(&self) -> Option<u32> {
        let dir = match self {
            PodCgroup::V2 { dir } => dir,
            PodCgroup::V1 { memory, cpuacct, .. } => memory.as_ref().or(cpuacct.as_ref())?,
        };
        first_pid(dir, 2)
    }
}

fn first_pid(dir: &Path, depth: usize) -> Option<u32> {
    if let Some(pid) = fs::read_to_string(dir.join("cgroup.procs"))
        .ok()
        .and_then(|procs| procs.lines().find_map(|l| l.trim().parse().ok()))
    {
        return Some(pid);
    }
    if depth == 0 {
        return None;
    }
    let mut children: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    children.sort();
    children.iter().find_map(|child| first_pid(child, depth - 1))
}

/// `key value` lines (`cpu.stat`, `memory.stat`).
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn read_u64(path: &Path) -> io::Result<u64> {
    fs::read_to_string(path)?
        .trim()
        .parse()
        .map_err(|_| invalid("not a number"))
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn missing(controller: &'static str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("the {controller} cgroup controller is not mounted"),
    )
}

#[cfg(test)]
mod tests {
    //! Every layout of the table in the module docs, as a fixture tree in a temporary directory:
    //! `/proc/<pid>/cgroup` as the kubelet and runtime write it, and the pod's cgroup directory with
    //! its accounting files.

    use super::*;

    const UID: &str = "1b2c3d4e-5f6a-7b8c-9d0e-f1a2b3c4d5e6";
    const CID: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[derive(Clone, Copy, Debug)]
    enum Version {
        V1,
        V2,
    }
    #[derive(Clone, Copy, Debug)]
    enum Driver {
        Systemd,
        Cgroupfs,
    }
    #[derive(Clone, Copy, Debug)]
    enum Runtime {
        Containerd,
        CriO,
        Docker,
    }

    /// The pod's directory (relative to a controller's root) and the container's below it.
    fn layout(driver: Driver, runtime: Runtime, qos: Option<&str>) -> (String, String) {
        let underscored = UID.replace('-', "_");
        let pod = match (driver, qos) {
            (Driver::Systemd, Some(q)) => {
                format!("kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{underscored}.slice")
            }
            (Driver::Systemd, None) => format!("kubepods.slice/kubepods-pod{underscored}.slice"),
            (Driver::Cgroupfs, Some(q)) => format!("kubepods/{q}/pod{UID}"),
            (Driver::Cgroupfs, None) => format!("kubepods/pod{UID}"),
        };
        let container = match (driver, runtime) {
            (Driver::Systemd, Runtime::Containerd) => format!("cri-containerd-{CID}.scope"),
            (Driver::Systemd, Runtime::CriO) => format!("crio-{CID}.scope"),
            (Driver::Systemd, Runtime::Docker) => format!("docker-{CID}.scope"),
            (Driver::Cgroupfs, Runtime::CriO) => format!("crio-{CID}"),
            (Driver::Cgroupfs, Runtime::Containerd | Runtime::Docker) => CID.to_owned(),
        };
        (pod.clone(), format!("{pod}/{container}"))
    }

    fn write(path: &Path, contents: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    /// Builds `proc/4242/cgroup` and the cgroup tree for one layout; returns (proc root, cgroup root).
    fn fixture(
        dir: &Path,
        version: Version,
        driver: Driver,
        runtime: Runtime,
        qos: Option<&str>,
    ) -> (PathBuf, PathBuf) {
        let (pod, container) = layout(driver, runtime, qos);
        let proc_root = dir.join("proc");
        let cgroup_root = dir.join("sys/fs/cgroup");
        match version {
            Version::V2 => {
                write(&proc_root.join("4242/cgroup"), &format!("0::/{container}\n"));
                write(
                    &cgroup_root.join("cgroup.controllers"),
                    "cpuset cpu io memory pids\n",
                );
                let pod_dir = cgroup_root.join(&pod);
                write(
                    &pod_dir.join("cpu.stat"),
                    "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
                );
                write(&pod_dir.join("cpu.max"), "150000 100000\n");
                write(&pod_dir.join("memory.current"), "300000000\n");
                write(
                    &pod_dir.join("memory.stat"),
                    "anon 200000000\nfile 100000000\ninactive_file 50000000\n",
                );
                write(&pod_dir.join("memory.max"), "1000000000\n");
                write(&cgroup_root.join(&container).join("cgroup.procs"), "4242\n");
            }
            Version::V1 => {
                write(
                    &proc_root.join("4242/cgroup"),
                    &format!(
                        "12:hugetlb:/{container}\n11:memory:/{container}\n4:cpu,cpuacct:/{container}\n\
                         1:name=systemd:/{container}\n0::/\n"
                    ),
                );
                let cpu_dir = cgroup_root.join("cpu,cpuacct").join(&pod);
                write(&cpu_dir.join("cpuacct.usage"), "2500000000\n");
                write(&cpu_dir.join("cpu.cfs_quota_us"), "150000\n");
                write(&cpu_dir.join("cpu.cfs_period_us"), "100000\n");
                let mem_dir = cgroup_root.join("memory").join(&pod);
                write(&mem_dir.join("memory.usage_in_bytes"), "300000000\n");
                write(
                    &mem_dir.join("memory.stat"),
                    "cache 100000000\ntotal_inactive_file 50000000\n",
                );
                write(&mem_dir.join("memory.limit_in_bytes"), "1000000000\n");
                write(
                    &cgroup_root.join("memory").join(&container).join("cgroup.procs"),
                    "4242\n",
                );
                fs::create_dir_all(cgroup_root.join("hugetlb")).unwrap();
            }
        }
        (proc_root, cgroup_root)
    }

    #[test]
    fn every_layout_maps_a_pid_to_its_pod_and_the_pod_to_its_accounting() {
        let mut checked = 0;
        for version in [Version::V1, Version::V2] {
            for driver in [Driver::Systemd, Driver::Cgroupfs] {
                for runtime in [Runtime::Containerd, Runtime::CriO, Runtime::Docker] {
                    for qos in [Some("burstable"), Some("besteffort"), None] {
                        let case = format!("{version:?} {driver:?} {runtime:?} {qos:?}");
                        let dir = tempfile::tempdir().unwrap();
                        let (proc_root, cgroup_root) = fixture(dir.path(), version, driver, runtime, qos);

                        let found = read_pid(&proc_root, 4242).unwrap();
                        assert_eq!(
                            found,
                            Some(CgroupRef {
                                pod_uid: UID.to_owned(),
                                container_id: Some(CID.to_owned())
                            }),
                            "{case}"
                        );

                        let cgroups = Cgroups::detect(&cgroup_root).unwrap();
                        assert_eq!(
                            cgroups.version(),
                            match version {
                                Version::V1 => 1,
                                Version::V2 => 2,
                            },
                            "{case}"
                        );
                        let pod = cgroups
                            .find_pod(UID)
                            .unwrap_or_else(|| panic!("{case}: pod not found"));
                        assert_eq!(pod.cpu_usage_usec().unwrap(), 2_500_000, "{case}");
                        assert_eq!(pod.cpu_limit_cores(), Some(1.5), "{case}");
                        assert_eq!(
                            pod.memory().unwrap(),
                            PodMemory {
                                working_set_bytes: 250_000_000,
                                limit_bytes: Some(1_000_000_000)
                            },
                            "{case}"
                        );
                        assert_eq!(pod.any_pid(), Some(4242), "{case}");
                        assert!(cgroups.find_pod("00000000-0000-0000-0000-000000000000").is_none());
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 2 * 2 * 3 * 3);
    }

    #[test]
    fn paths_seen_from_inside_a_cgroup_namespace_still_name_the_pod() {
        let underscored = UID.replace('-', "_");
        let text =
            format!("0::/../../kubepods-besteffort-pod{underscored}.slice/cri-containerd-{CID}.scope\n");
        assert_eq!(
            parse_proc_cgroup(&text),
            Some(CgroupRef {
                pod_uid: UID.to_owned(),
                container_id: Some(CID.to_owned())
            })
        );
    }

    #[test]
    fn kind_nodes_nest_the_kubelet_slice() {
        let underscored = UID.replace('-', "_");
        let path = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
             kubelet-kubepods-besteffort-pod{underscored}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(parse_path(&path).unwrap().pod_uid, UID);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("cgroup.controllers"), "cpu memory\n");
        write(
            &root.join(path.trim_start_matches('/')).join("cgroup.procs"),
            "7\n",
        );
        let pod = Cgroups::detect(root).unwrap().find_pod(UID).unwrap();
        assert_eq!(pod.any_pid(), Some(7));
        // No accounting files: errors, not panics; no limits.
        assert!(pod.cpu_usage_usec().is_err());
        assert!(pod.memory().is_err());
        assert_eq!(pod.cpu_limit_cores(), None);
    }

    #[test]
    fn crio_conmon_and_the_pod_cgroup_itself() {
        let underscored = UID.replace('-', "_");
        let conmon = format!("0::/kubepods.slice/kubepods-pod{underscored}.slice/crio-conmon-{CID}.scope");
        assert_eq!(
            parse_proc_cgroup(&conmon).unwrap().container_id.as_deref(),
            Some(CID)
        );
        let pod_only = format!("0::/kubepods.slice/kubepods-pod{underscored}.slice\n");
        assert_eq!(
            parse_proc_cgroup(&pod_only),
            Some(CgroupRef {
                pod_uid: UID.to_owned(),
                container_id: None
            })
        );
    }

    #[test]
    fn processes_outside_pods_are_not_attributed() {
        for text in [
            "0::/system.slice/containerd.service\n",
            "0::/user.slice/user-1000.slice/session-3.scope\n",
            "0::/\n",
            &format!("12:memory:/docker/{CID}\n0::/\n"),
            "0::/kubepods.slice/kubepods-burstable.slice\n",
            // Not a UID, and "pod" inside a longer word.
            "0::/kubepods/burstable/pod1234\n",
            &format!("0::/kubepods/mypod{UID}\n"),
            "garbage without colons\n",
        ] {
            assert_eq!(parse_proc_cgroup(text), None, "{text}");
        }
    }

    #[test]
    fn unlimited_pods_have_no_limits() {
        let dir = tempfile::tempdir().unwrap();
        let v2 = dir.path().join("v2");
        write(&v2.join("cpu.max"), "max 100000\n");
        write(&v2.join("memory.max"), "max\n");
        write(&v2.join("memory.current"), "1000\n");
        let pod = PodCgroup::V2 { dir: v2 };
        assert_eq!(pod.cpu_limit_cores(), None);
        assert_eq!(pod.memory().unwrap().limit_bytes, None);

        let v1 = dir.path().join("v1");
        write(&v1.join("cpu.cfs_quota_us"), "-1\n");
        write(&v1.join("cpu.cfs_period_us"), "100000\n");
        write(&v1.join("memory.limit_in_bytes"), "9223372036854771712\n");
        write(&v1.join("memory.usage_in_bytes"), "1000\n");
        let pod = PodCgroup::V1 {
            cpuacct: None,
            cpu: Some(v1.clone()),
            memory: Some(v1),
        };
        assert_eq!(pod.cpu_limit_cores(), None);
        assert_eq!(
            pod.memory().unwrap(),
            PodMemory {
                working_set_bytes: 1000,
                limit_bytes: None
            }
        );
    }

    #[test]
    fn a_missing_cgroup_mount_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Cgroups::detect(&dir.path().join("absent")).is_none());
        assert!(Cgroups::detect(dir.path()).is_none());
    }
}

#[cfg(test)]
mod proptests {
    //! Properties of the `/proc/<pid>/cgroup` parser: any text is handled without a panic, and every
    //! layout the module docs list, generated with random IDs, QoS, cgroup-namespace views, v1
    //! hierarchies and noise lines, yields the pod UID and container ID that were put in.

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Copy, Debug)]
    enum Driver {
        Systemd,
        Cgroupfs,
        /// kind: systemd below `kubelet.slice/kubelet-kubepods.slice`.
        Kind,
    }

    #[derive(Clone, Copy, Debug)]
    enum Runtime {
        Containerd,
        CriO,
        CriOConmon,
        Docker,
    }

    #[derive(Clone, Debug)]
    struct Layout {
        uid: String,
        cid: String,
        driver: Driver,
        runtime: Runtime,
        qos: Option<&'static str>,
        /// The process sits in the pod cgroup itself, not in a container's.
        in_pod_cgroup: bool,
        /// Segments below the container (a container that makes its own cgroups).
        below: Vec<&'static str>,
        /// Leading segments hidden by a cgroup namespace, shown as `..`.
        hidden: usize,
    }

    impl Layout {
        /// The cgroup path of the process, as `/proc/<pid>/cgroup` shows it.
        fn path(&self) -> String {
            let Layout {
                uid,
                cid,
                driver,
                runtime,
                qos,
                ..
            } = self;
            let underscored = uid.replace('-', "_");
            let mut segments: Vec<String> = match (driver, qos) {
                (Driver::Systemd, Some(q)) => vec![
                    "kubepods.slice".into(),
                    format!("kubepods-{q}.slice"),
                    format!("kubepods-{q}-pod{underscored}.slice"),
                ],
                (Driver::Systemd, None) => {
                    vec![
                        "kubepods.slice".into(),
                        format!("kubepods-pod{underscored}.slice"),
                    ]
                }
                (Driver::Kind, Some(q)) => vec![
                    "kubelet.slice".into(),
                    "kubelet-kubepods.slice".into(),
                    format!("kubelet-kubepods-{q}.slice"),
                    format!("kubelet-kubepods-{q}-pod{underscored}.slice"),
                ],
                (Driver::Kind, None) => vec![
                    "kubelet.slice".into(),
                    "kubelet-kubepods.slice".into(),
                    format!("kubelet-kubepods-pod{underscored}.slice"),
                ],
                (Driver::Cgroupfs, Some(q)) => vec!["kubepods".into(), (*q).into(), format!("pod{uid}")],
                (Driver::Cgroupfs, None) => vec!["kubepods".into(), format!("pod{uid}")],
            };
            // A namespace can hide the ancestors of the pod's segment, never the segment itself.
            let hidden = self.hidden.min(segments.len() - 1);
            segments.splice(..hidden, std::iter::repeat_n("..".to_owned(), hidden));
            if !self.in_pod_cgroup {
                let systemd = !matches!(driver, Driver::Cgroupfs);
                segments.push(match (systemd, runtime) {
                    (true, Runtime::Containerd) => format!("cri-containerd-{cid}.scope"),
                    (true, Runtime::CriO) => format!("crio-{cid}.scope"),
                    (true, Runtime::CriOConmon) => format!("crio-conmon-{cid}.scope"),
                    (true, Runtime::Docker) => format!("docker-{cid}.scope"),
                    (false, Runtime::CriO | Runtime::CriOConmon) => format!("crio-{cid}"),
                    (false, Runtime::Containerd | Runtime::Docker) => cid.clone(),
                });
                segments.extend(self.below.iter().map(|s| (*s).to_owned()));
            }
            format!("/{}", segments.join("/"))
        }

        fn expected(&self) -> CgroupRef {
            CgroupRef {
                pod_uid: self.uid.clone(),
                container_id: (!self.in_pod_cgroup).then(|| self.cid.clone()),
            }
        }
    }

    fn hex(len: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(prop::sample::select(b"0123456789abcdef".as_slice()), len)
            .prop_map(|bytes| bytes.into_iter().map(char::from).collect())
    }

    fn uid() -> impl Strategy<Value = String> {
        (hex(8), hex(4), hex(4), hex(4), hex(12)).prop_map(|(a, b, c, d, e)| format!("{a}-{b}-{c}-{d}-{e}"))
    }

    fn layout() -> impl Strategy<Value = Layout> {
        (
            uid(),
            hex(64),
            prop_oneof![Just(Driver::Systemd), Just(Driver::Cgroupfs), Just(Driver::Kind)],
            prop_oneof![
                Just(Runtime::Containerd),
                Just(Runtime::CriO),
                Just(Runtime::CriOConmon),
                Just(Runtime::Docker)
            ],
            prop::option::of(prop::sample::select(vec!["burstable", "besteffort"])),
            prop::bool::weighted(0.2),
            proptest::collection::vec(
                prop::sample::select(vec!["init.scope", "system.slice", "app", "worker-1.service"]),
                0..3,
            ),
            0usize..5,
        )
            .prop_map(
                |(uid, cid, driver, runtime, qos, in_pod_cgroup, below, hidden)| Layout {
                    uid,
                    cid,
                    driver,
                    runtime,
                    qos,
                    in_pod_cgroup,
                    below,
                    hidden,
                },
            )
    }

    /// `/proc/<pid>/cgroup` of a v1 node: one line per hierarchy, in the kernel's descending order,
    /// each a controller list. The hierarchies the runtime manages carry the process's path; the
    /// others (`rdma`, `misc`) may sit at the root.
    fn v1_file(path: &str, unmanaged_at_root: &[bool]) -> String {
        const HIERARCHIES: [&str; 12] = [
            "hugetlb",
            "memory",
            "cpu,cpuacct",
            "pids",
            "blkio",
            "devices",
            "freezer",
            "net_cls,net_prio",
            "perf_event",
            "cpuset",
            "rdma",
            "name=systemd",
        ];
        let mut text = String::new();
        for (i, controllers) in HIERARCHIES.iter().enumerate() {
            let at_root = matches!(*controllers, "rdma" | "hugetlb")
                && unmanaged_at_root.get(i).copied().unwrap_or(false);
            let line_path = if at_root { "/" } else { path };
            text.push_str(&format!("{}:{controllers}:{line_path}\n", HIERARCHIES.len() - i));
        }
        text.push_str("0::/\n");
        text
    }

    /// Lines that name no pod: other hierarchies, system services, user sessions.
    fn noise_line() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("0::/system.slice/containerd.service".to_owned()),
            Just("13:misc:/".to_owned()),
            Just("1:name=openrc:/user.slice/user-1000.slice/session-3.scope".to_owned()),
            "[a-z=,]{0,12}".prop_map(|c| format!("14:{c}:/")),
        ]
    }

    /// Text made of the pieces cgroup paths are made of, so the parser's branches are reached more
    /// often than by uniformly random text.
    fn cgroup_soup() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("pod".to_owned()),
            Just("-pod".to_owned()),
            Just("kubepods".to_owned()),
            Just(".slice".to_owned()),
            Just(".scope".to_owned()),
            Just("cri-containerd-".to_owned()),
            Just("crio-".to_owned()),
            Just("crio-conmon-".to_owned()),
            Just("docker-".to_owned()),
            Just("/".to_owned()),
            Just("/../".to_owned()),
            Just(":".to_owned()),
            Just("0::".to_owned()),
            Just("\n".to_owned()),
            Just("\r\n".to_owned()),
            Just("-".to_owned()),
            Just("_".to_owned()),
            Just("é".to_owned()),
            Just("\u{0}".to_owned()),
            uid(),
            uid().prop_map(|u| u.replace('-', "_")),
            hex(64),
            hex_any(1..70),
            ".{0,8}",
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    fn hex_any(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
        proptest::collection::vec(prop::sample::select(b"0123456789abcdef".as_slice()), len)
            .prop_map(|bytes| bytes.into_iter().map(char::from).collect())
    }

    /// What any answer must look like: a dashed UID that the input named, and a 64-hex-digit
    /// container ID that the input named.
    fn check_shape(text: &str, found: &CgroupRef) -> Result<(), TestCaseError> {
        prop_assert!(
            is_uid(&found.pod_uid) && !found.pod_uid.contains('_'),
            "{found:?}"
        );
        let underscored = found.pod_uid.replace('-', "_");
        prop_assert!(
            text.contains(&found.pod_uid) || text.contains(&underscored),
            "{found:?} not in {text:?}"
        );
        if let Some(cid) = &found.container_id {
            prop_assert!(cid.len() == 64 && cid.bytes().all(|b| b.is_ascii_hexdigit()));
            prop_assert!(text.contains(cid.as_str()));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn any_text_is_parsed_without_panicking(text in any::<String>()) {
            if let Some(found) = parse_proc_cgroup(&text) {
                check_shape(&text, &found)?;
            }
            let _ = parse_path(&text);
        }

        #[test]
        fn text_made_of_cgroup_pieces_is_parsed_without_panicking(text in cgroup_soup()) {
            if let Some(found) = parse_proc_cgroup(&text) {
                check_shape(&text, &found)?;
            }
            if let Some(found) = parse_path(&text) {
                check_shape(&text, &found)?;
            }
        }

        #[test]
        fn v2_files_name_the_pod_and_container_put_in(
            layout in layout(),
            noise in proptest::collection::vec(noise_line(), 0..3),
            crlf in any::<bool>(),
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut lines = noise;
            lines.push(format!("0::{}", layout.path()));
            let text = lines.join(eol) + eol;
            prop_assert_eq!(parse_proc_cgroup(&text), Some(layout.expected()), "{}", text);
        }

        #[test]
        fn v1_files_name_the_pod_and_container_put_in(
            layout in layout(),
            at_root in proptest::collection::vec(any::<bool>(), 12),
        ) {
            let text = v1_file(&layout.path(), &at_root);
            prop_assert_eq!(parse_proc_cgroup(&text), Some(layout.expected()), "{}", text);
        }

        #[test]
        fn paths_name_the_pod_and_container_put_in(layout in layout()) {
            prop_assert_eq!(parse_path(&layout.path()), Some(layout.expected()));
        }
    }
}
