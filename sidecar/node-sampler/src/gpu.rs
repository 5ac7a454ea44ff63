//! GPUs behind one trait: [`NvmlGpuSource`] reads NVIDIA GPUs through NVML, loading
//! `libnvidia-ml.so.1` at run time (nothing NVIDIA is needed to build or to run without a GPU);
//! [`FakeGpuSource`] serves scripted readings to tests.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;

/// One GPU at one moment. Readings the device does not support are `None`, and their series are
/// left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuReading {
    /// NVML's index (PCI bus order), the `gpu` label.
    pub index: u32,
    pub uuid: String,
    /// Product name, the `gpu_model` label (`NVIDIA H100 80GB HBM3`).
    pub model: String,
    /// Percent of the last sample period in which a kernel ran.
    pub utilization_percent: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub power_milliwatts: Option<u64>,
    /// The power limit the driver enforces, milliwatts.
    pub power_limit_milliwatts: Option<u64>,
    pub temperature_celsius: Option<f64>,
    /// Processes with a context on this GPU (compute and graphics), host PIDs.
    pub processes: Vec<GpuProcess>,
}

/// A process using a GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuProcess {
    pub pid: u32,
    /// GPU memory the process holds; `None` where the driver does not say (e.g. some MIG setups).
    pub used_memory_bytes: Option<u64>,
}

/// Reading the GPUs failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("NVML call failed")]
    Nvml(#[from] NvmlError),
    #[error("{0}")]
    Other(String),
}

/// A source of GPU readings. Implementations are called from blocking threads.
pub trait GpuSource: Send + Sync + 'static {
    /// One line for the startup log (`NVML 12.550.54 driver 550.54.15, 8 GPUs`).
    fn describe(&self) -> String;

    /// Every GPU, in index order.
    fn sample(&self) -> Result<Vec<GpuReading>, GpuError>;
}

// === impl NvmlGpuSource ===

/// Library names tried when no `--nvml-library` is given: the versioned name that the NVIDIA
/// container toolkit mounts, then the development symlink.
const NVML_LIBRARIES: [&str; 2] = ["libnvidia-ml.so.1", "libnvidia-ml.so"];

/// NVIDIA GPUs through NVML.
pub struct NvmlGpuSource {
    nvml: Nvml,
    /// (uuid, model) per index; fixed for the life of the driver.
    devices: Vec<(String, String)>,
    description: String,
}

impl NvmlGpuSource {
    /// Loads NVML (from `library`, or the usual names) and lists the GPUs.
    pub fn open(library: Option<&Path>) -> Result<NvmlGpuSource, GpuError> {
        let candidates: Vec<&OsStr> = match library {
            Some(path) => vec![path.as_os_str()],
            None => NVML_LIBRARIES.iter().map(OsStr::new).collect(),
        };
        let mut last_err = None;
        let mut nvml = None;
        for candidate in candidates {
            match Nvml::builder().lib_path(candidate).init() {
                Ok(loaded) => {
                    nvml = Some(loaded);
                    break;
                }
                Err(err) => last_err = Some(err),
            }
        }
        let nvml = match (nvml, last_err) {
            (Some(nvml), _) => nvml,
            (None, Some(err)) => return Err(err.into()),
            (None, None) => return Err(GpuError::Other("no NVML library to try".to_owned())),
        };
        let count = nvml.device_count()?;
        let mut devices = Vec::with_capacity(count as usize);
        for index in 0..count {
            let device = nvml.device_by_index(index)?;
            devices.push((device.uuid()?, device.name()?));
        }
        let description = format!(
            "NVML {} (driver {}), {} GPU(s): {}",
            nvml.sys_nvml_version().unwrap_or_else(|_| "?".to_owned()),
            nvml.sys_driver_version().unwrap_or_else(|_| "?".to_owned()),
            devices.len(),
            devices
                .iter()
                .map(|(_, model)| model.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
        Ok(NvmlGpuSource {
            nvml,
            devices,
            description,
        })
    }

    /// How many GPUs NVML found.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    fn read(&self, index: u32, uuid: &str, model: &str) -> Result<GpuReading, NvmlError> {
        let device = self.nvml.device_by_index(index)?;
        // Each reading on its own: a GPU without power readings still reports the rest.
        let memory = device.memory_info().ok();
        let mut processes: Vec<GpuProcess> = Vec::new();
        for list in [
            device.running_compute_processes(),
            device.running_graphics_processes(),
        ] {
            for process in list.unwrap_or_default() {
                let used = match process.used_gpu_memory {
                    UsedGpuMemory::Used(bytes) => Some(bytes),
                    UsedGpuMemory::Unavailable => None,
                };
                match processes.iter_mut().find(|p| p.pid == process.pid) {
                    Some(seen) => {
                        seen.used_memory_bytes = match (seen.used_memory_bytes, used) {
                            (Some(a), Some(b)) => Some(a.max(b)),
                            (a, b) => a.or(b),
                        }
                    }
                    None => processes.push(GpuProcess {
                        pid: process.pid,
                        used_memory_bytes: used,
                    }),
                }
            }
        }
        processes.sort_by_key(|p| p.pid);
        Ok(GpuReading {
            index,
            uuid: uuid.to_owned(),
            model: model.to_owned(),
            utilization_percent: device.utilization_rates().ok().map(|u| f64::from(u.gpu)),
            memory_used_bytes: memory.as_ref().map(|m| m.used),
            memory_total_bytes: memory.as_ref().map(|m| m.total),
            power_milliwatts: device.power_usage().ok().map(u64::from),
            power_limit_milliwatts: device.enforced_power_limit().ok().map(u64::from),
            temperature_celsius: device.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
            processes,
        })
    }
}

impl GpuSource for NvmlGpuSource {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn sample(&self) -> Result<Vec<GpuReading>, GpuError> {
        let mut readings = Vec::with_capacity(self.devices.len());
        for (index, (uuid, model)) in (0u32..).zip(&self.devices) {
            match self.read(index, uuid, model) {
                Ok(reading) => readings.push(reading),
                // A GPU that fell off the bus is left out; the others are still reported.
                Err(err) => tracing::debug!(gpu = index, error = %err, "cannot read GPU"),
            }
        }
        if readings.is_empty() && !self.devices.is_empty() {
            return Err(GpuError::Other("no GPU could be read".to_owned()));
        }
        Ok(readings)
    }
}

/// Where GPU readings come from, resolved at startup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GpuConfig {
    /// Load NVML from `library` or the usual names; GPU series are absent when it cannot be.
    #[default]
    Nvml,
    /// Load NVML from this file.
    NvmlLibrary(PathBuf),
    /// Do not look for GPUs.
    Disabled,
}

/// Opens the GPU source and says, in one log line, whether GPU series will be exported.
pub fn open(config: &GpuConfig) -> Option<Arc<dyn GpuSource>> {
    let library = match config {
        GpuConfig::Disabled => {
            tracing::info!("GPU metrics disabled (--disable-gpu): no GPU series");
            return None;
        }
        GpuConfig::Nvml => None,
        GpuConfig::NvmlLibrary(path) => Some(path.as_path()),
    };
    match NvmlGpuSource::open(library) {
        Ok(source) if source.device_count() == 0 => {
            tracing::info!(nvml = %source.describe(), "NVML found no GPU on this node: no GPU series");
            None
        }
        Ok(source) => {
            tracing::info!(gpus = %source.describe(), "reading GPUs through NVML");
            Some(Arc::new(source))
        }
        Err(err) => {
            let why = match &err {
                GpuError::Nvml(NvmlError::LibloadingError(_)) => {
                    "the NVIDIA driver library libnvidia-ml.so.1 is not here (no NVIDIA GPU, or the pod \
                     lacks NVIDIA_VISIBLE_DEVICES=all / the nvidia runtime class)"
                }
                GpuError::Nvml(NvmlError::DriverNotLoaded) => "the NVIDIA kernel driver is not loaded",
                GpuError::Nvml(NvmlError::NoPermission) => "NVML has no permission to talk to the driver",
                _ => "NVML failed to start",
            };
            // NVML's errors already include their cause: one level is the whole story.
            let detail = match &err {
                GpuError::Nvml(inner) => inner.to_string(),
                GpuError::Other(message) => message.clone(),
            };
            tracing::info!(error = %detail, "no GPU metrics: {why}; host metrics only");
            None
        }
    }
}

// === impl FakeGpuSource ===

/// Scripted readings for tests: each sample returns the next entry of the script, round and round.
pub struct FakeGpuSource {
    script: Mutex<Vec<Result<Vec<GpuReading>, String>>>,
    calls: AtomicUsize,
}

impl FakeGpuSource {
    /// Always these readings (until [`set`](FakeGpuSource::set) or [`fail`](FakeGpuSource::fail)).
    pub fn new(readings: Vec<GpuReading>) -> Arc<FakeGpuSource> {
        FakeGpuSource::cycle(vec![readings])
    }

    /// The first sample returns `script[0]`, the next `script[1]`, and so on, starting over at the
    /// end.
    pub fn cycle(script: Vec<Vec<GpuReading>>) -> Arc<FakeGpuSource> {
        Arc::new(FakeGpuSource {
            script: Mutex::new(script.into_iter().map(Ok).collect()),
            calls: AtomicUsize::new(0),
        })
    }

    /// What the next samples return.
    pub fn set(&self, readings: Vec<GpuReading>) {
        if let Ok(mut script) = self.script.lock() {
            *script = vec![Ok(readings)];
        }
    }

    /// Makes the next samples fail.
    pub fn fail(&self, message: &str) {
        if let Ok(mut script) = self.script.lock() {
            *script = vec![Err(message.to_owned())];
        }
    }

    /// How many times the GPUs were read.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

impl GpuSource for FakeGpuSource {
    fn describe(&self) -> String {
        "fake GPUs".to_owned()
    }

    fn sample(&self) -> Result<Vec<GpuReading>, GpuError> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let script = self
            .script
            .lock()
            .map_err(|_| GpuError::Other("poisoned".to_owned()))?;
        match script.get(call % script.len().max(1)) {
            Some(entry) => entry.clone().map_err(GpuError::Other),
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_driver_library_there_is_no_source() {
        let missing = GpuConfig::NvmlLibrary(PathBuf::from("/nonexistent/libnvidia-ml.so.1"));
        assert!(open(&missing).is_none());
        assert!(open(&GpuConfig::Disabled).is_none());
        let err = NvmlGpuSource::open(Some(Path::new("/nonexistent/libnvidia-ml.so.1")))
            .err()
            .unwrap();
        assert!(
            matches!(err, GpuError::Nvml(NvmlError::LibloadingError(_))),
            "{err:?}"
        );
    }

    #[test]
    fn the_fake_replays_what_it_was_given() {
        let fake = FakeGpuSource::new(vec![GpuReading {
            index: 0,
            uuid: "GPU-0".to_owned(),
            ..Default::default()
        }]);
        assert_eq!(fake.sample().unwrap().len(), 1);
        fake.fail("gone");
        assert!(fake.sample().is_err());
        assert_eq!(fake.calls(), 2);
        let reading = |index| GpuReading {
            index,
            ..Default::default()
        };
        let cycling = FakeGpuSource::cycle(vec![vec![reading(0)], vec![reading(1)]]);
        let indices: Vec<u32> = (0..3).map(|_| cycling.sample().unwrap()[0].index).collect();
        assert_eq!(indices, [0, 1, 0]);
    }
}
