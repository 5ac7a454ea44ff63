//! The node sampler's `/metrics`: MLflow's system metric names (docs/architecture.md "Metric names"), set from one
//! [`Snapshot`] and encoded once per sample in Prometheus' classic text format. A scrape only copies
//! the last encoding.
//!
//! Labels: `node` on every series; GPU series also `gpu` (NVML index), `uuid`, `gpu_model`; per-pod
//! GPU memory `namespace`, `pod`, `container`, `gpu`, `node`. Megabytes are 10^6 bytes, as MLflow
//! counts them. Network bytes are counters; everything else is a gauge.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::sampler::Snapshot;

pub const CPU_UTILIZATION: &str = "mlflow_system_cpu_utilization_percentage";
pub const MEMORY_USAGE_MEGABYTES: &str = "mlflow_system_memory_usage_megabytes";
pub const MEMORY_USAGE_PERCENTAGE: &str = "mlflow_system_memory_usage_percentage";
pub const DISK_USAGE_MEGABYTES: &str = "mlflow_system_disk_usage_megabytes";
pub const DISK_AVAILABLE_MEGABYTES: &str = "mlflow_system_disk_available_megabytes";
/// Counters are registered without `_total`; the encoder appends it to the samples.
pub const NETWORK_RECEIVE_BYTES: &str = "mlflow_system_network_receive_bytes";
pub const NETWORK_TRANSMIT_BYTES: &str = "mlflow_system_network_transmit_bytes";
pub const GPU_UTILIZATION: &str = "mlflow_system_gpu_utilization_percentage";
pub const GPU_MEMORY_USAGE_MEGABYTES: &str = "mlflow_system_gpu_memory_usage_megabytes";
pub const GPU_MEMORY_USAGE_PERCENTAGE: &str = "mlflow_system_gpu_memory_usage_percentage";
pub const GPU_POWER_USAGE_WATTS: &str = "mlflow_system_gpu_power_usage_watts";
pub const GPU_POWER_USAGE_PERCENTAGE: &str = "mlflow_system_gpu_power_usage_percentage";
pub const GPU_TEMPERATURE_CELSIUS: &str = "mlflow_system_gpu_temperature_celsius";
pub const GPU_POD_MEMORY_USAGE_MEGABYTES: &str = "mlflow_system_gpu_pod_memory_usage_megabytes";

/// Every series name `/metrics` can carry, as exposed (counters with `_total`).
pub const EXPOSED_NAMES: [&str; 14] = [
    CPU_UTILIZATION,
    MEMORY_USAGE_MEGABYTES,
    MEMORY_USAGE_PERCENTAGE,
    DISK_USAGE_MEGABYTES,
    DISK_AVAILABLE_MEGABYTES,
    "mlflow_system_network_receive_bytes_total",
    "mlflow_system_network_transmit_bytes_total",
    GPU_UTILIZATION,
    GPU_MEMORY_USAGE_MEGABYTES,
    GPU_MEMORY_USAGE_PERCENTAGE,
    GPU_POWER_USAGE_WATTS,
    GPU_POWER_USAGE_PERCENTAGE,
    GPU_TEMPERATURE_CELSIUS,
    GPU_POD_MEMORY_USAGE_MEGABYTES,
];

/// Bytes per megabyte, as MLflow's system metrics count them.
pub const MEGABYTE: f64 = 1e6;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GpuLabels {
    node: String,
    gpu: String,
    uuid: String,
    gpu_model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodGpuLabels {
    namespace: String,
    pod: String,
    container: String,
    gpu: String,
    node: String,
}

type GaugeF64 = Gauge<f64, AtomicU64>;

/// The registry and the handles the sampler sets.
pub struct NodeMetrics {
    registry: Registry,
    node: NodeLabels,
    cpu: Family<NodeLabels, GaugeF64>,
    memory_megabytes: Family<NodeLabels, GaugeF64>,
    memory_percentage: Family<NodeLabels, GaugeF64>,
    disk_usage_megabytes: Family<NodeLabels, GaugeF64>,
    disk_available_megabytes: Family<NodeLabels, GaugeF64>,
    network_receive: Family<NodeLabels, Counter>,
    network_transmit: Family<NodeLabels, Counter>,
    gpu_utilization: Family<GpuLabels, GaugeF64>,
    gpu_memory_megabytes: Family<GpuLabels, GaugeF64>,
    gpu_memory_percentage: Family<GpuLabels, GaugeF64>,
    gpu_power_watts: Family<GpuLabels, GaugeF64>,
    gpu_power_percentage: Family<GpuLabels, GaugeF64>,
    gpu_temperature: Family<GpuLabels, GaugeF64>,
    gpu_pod_memory: Family<PodGpuLabels, GaugeF64>,
    /// Network totals already added to the counters.
    exported_network: (u64, u64),
}

impl NodeMetrics {
    pub fn new(node: &str) -> NodeMetrics {
        let mut registry = Registry::default();
        let mut gauge = |name: &str, help: &str| {
            let family = Family::<NodeLabels, GaugeF64>::default();
            registry.register(name, help, family.clone());
            family
        };
        let cpu = gauge(
            CPU_UTILIZATION,
            "Busy share of all CPUs of the node over the last sample interval",
        );
        let memory_megabytes = gauge(
            MEMORY_USAGE_MEGABYTES,
            "Memory in use on the node (total minus available), MB",
        );
        let memory_percentage = gauge(
            MEMORY_USAGE_PERCENTAGE,
            "Memory in use on the node, percent of total",
        );
        let disk_usage_megabytes = gauge(
            DISK_USAGE_MEGABYTES,
            "Space used on the node's root filesystem, MB",
        );
        let disk_available_megabytes = gauge(
            DISK_AVAILABLE_MEGABYTES,
            "Space available to non-root users on the node's root filesystem, MB",
        );
        let mut counter = |name: &str, help: &str| {
            let family = Family::<NodeLabels, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let network_receive = counter(
            NETWORK_RECEIVE_BYTES,
            "Bytes received by the node's network interfaces",
        );
        let network_transmit = counter(
            NETWORK_TRANSMIT_BYTES,
            "Bytes sent by the node's network interfaces",
        );
        let mut gpu = |name: &str, help: &str| {
            let family = Family::<GpuLabels, GaugeF64>::default();
            registry.register(name, help, family.clone());
            family
        };
        let gpu_utilization = gpu(
            GPU_UTILIZATION,
            "Share of the last sample period in which a kernel ran on the GPU",
        );
        let gpu_memory_megabytes = gpu(GPU_MEMORY_USAGE_MEGABYTES, "GPU memory in use, MB");
        let gpu_memory_percentage = gpu(GPU_MEMORY_USAGE_PERCENTAGE, "GPU memory in use, percent of total");
        let gpu_power_watts = gpu(GPU_POWER_USAGE_WATTS, "GPU power draw, W");
        let gpu_power_percentage = gpu(
            GPU_POWER_USAGE_PERCENTAGE,
            "GPU power draw, percent of the enforced power limit",
        );
        let gpu_temperature = gpu(GPU_TEMPERATURE_CELSIUS, "GPU core temperature, degrees Celsius");
        let gpu_pod_memory = Family::<PodGpuLabels, GaugeF64>::default();
        registry.register(
            GPU_POD_MEMORY_USAGE_MEGABYTES,
            "GPU memory held by the processes of one container, MB (pod is the pod UID when its name is not known)",
            gpu_pod_memory.clone(),
        );
        NodeMetrics {
            registry,
            node: NodeLabels {
                node: node.to_owned(),
            },
            cpu,
            memory_megabytes,
            memory_percentage,
            disk_usage_megabytes,
            disk_available_megabytes,
            network_receive,
            network_transmit,
            gpu_utilization,
            gpu_memory_megabytes,
            gpu_memory_percentage,
            gpu_power_watts,
            gpu_power_percentage,
            gpu_temperature,
            gpu_pod_memory,
            exported_network: (0, 0),
        }
    }

    /// Sets every series from `snapshot`; series it has no value for disappear.
    pub fn update(&mut self, snapshot: &Snapshot) {
        let node = &self.node;
        let host = &snapshot.host;
        self.cpu.get_or_create(node).set(host.cpu_utilization_percent);
        self.memory_megabytes
            .get_or_create(node)
            .set(host.memory_used_bytes as f64 / MEGABYTE);
        if host.memory_total_bytes > 0 {
            self.memory_percentage
                .get_or_create(node)
                .set(host.memory_used_bytes as f64 / host.memory_total_bytes as f64 * 100.0);
        }
        match &host.disk {
            Some(disk) => {
                self.disk_usage_megabytes
                    .get_or_create(node)
                    .set(disk.used_bytes as f64 / MEGABYTE);
                self.disk_available_megabytes
                    .get_or_create(node)
                    .set(disk.available_bytes as f64 / MEGABYTE);
            }
            None => {
                self.disk_usage_megabytes.remove(node);
                self.disk_available_megabytes.remove(node);
            }
        }
        if let Some(network) = &host.network {
            let (rx, tx) = self.exported_network;
            self.network_receive
                .get_or_create(node)
                .inc_by(network.receive_bytes.saturating_sub(rx));
            self.network_transmit
                .get_or_create(node)
                .inc_by(network.transmit_bytes.saturating_sub(tx));
            self.exported_network = (network.receive_bytes.max(rx), network.transmit_bytes.max(tx));
        }

        let gpu_families = [
            &self.gpu_utilization,
            &self.gpu_memory_megabytes,
            &self.gpu_memory_percentage,
            &self.gpu_power_watts,
            &self.gpu_power_percentage,
            &self.gpu_temperature,
        ];
        for family in gpu_families {
            family.clear();
        }
        for gpu in &snapshot.gpus {
            let labels = GpuLabels {
                node: node.node.clone(),
                gpu: gpu.index.to_string(),
                uuid: gpu.uuid.clone(),
                gpu_model: gpu.model.clone(),
            };
            let set = |family: &Family<GpuLabels, GaugeF64>, value: Option<f64>| {
                if let Some(value) = value.filter(|v| v.is_finite()) {
                    family.get_or_create(&labels).set(value);
                }
            };
            set(&self.gpu_utilization, gpu.utilization_percent);
            set(
                &self.gpu_memory_megabytes,
                gpu.memory_used_bytes.map(|b| b as f64 / MEGABYTE),
            );
            set(
                &self.gpu_memory_percentage,
                ratio_percent(gpu.memory_used_bytes, gpu.memory_total_bytes),
            );
            set(
                &self.gpu_power_watts,
                gpu.power_milliwatts.map(|mw| mw as f64 / 1000.0),
            );
            set(
                &self.gpu_power_percentage,
                ratio_percent(gpu.power_milliwatts, gpu.power_limit_milliwatts),
            );
            set(&self.gpu_temperature, gpu.temperature_celsius);
        }

        self.gpu_pod_memory.clear();
        for usage in &snapshot.pod_gpu_memory {
            self.gpu_pod_memory
                .get_or_create(&PodGpuLabels {
                    namespace: usage.namespace.clone(),
                    pod: usage.pod.clone(),
                    container: usage.container.clone(),
                    gpu: usage.gpu.to_string(),
                    node: node.node.clone(),
                })
                .set(usage.used_bytes as f64 / MEGABYTE);
        }
    }

    /// The exposition in Prometheus' classic text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut openmetrics = String::new();
        prometheus_client::encoding::text::encode(&mut openmetrics, &self.registry)?;
        Ok(to_prometheus_text(&openmetrics))
    }
}

/// `part / whole` in percent, when both are known and `whole` is not zero.
pub fn ratio_percent(part: Option<u64>, whole: Option<u64>) -> Option<f64> {
    match (part, whole) {
        (Some(part), Some(whole)) if whole > 0 => Some(part as f64 / whole as f64 * 100.0),
        _ => None,
    }
}

pub use mlkube_sidecar::exposition::to_prometheus_text;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_like_their_samples_and_empty_families_left_out() {
        let openmetrics = "# HELP x_bytes Bytes.\n# TYPE x_bytes counter\nx_bytes_total{node=\"a\"} 3\n\
                           # HELP g Gauge.\n# TYPE g gauge\n# UNIT g seconds\ng 1.5\n\
                           # HELP empty Nothing.\n# TYPE empty gauge\n\
                           # HELP c Counter.\n# TYPE c counter\n# EOF\n";
        assert_eq!(
            to_prometheus_text(openmetrics),
            "# HELP x_bytes_total Bytes.\n# TYPE x_bytes_total counter\nx_bytes_total{node=\"a\"} 3\n\
             # HELP g Gauge.\n# TYPE g gauge\ng 1.5\n"
        );
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio_percent(Some(1), Some(4)), Some(25.0));
        assert_eq!(ratio_percent(Some(1), Some(0)), None);
        assert_eq!(ratio_percent(None, Some(4)), None);
    }
}
