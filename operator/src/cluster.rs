//! What the operator knows of the cluster's API server independent of any resource: which optional
//! APIs it serves (found by discovery, see [`crate::apply`]) and how its errors read in a condition
//! message. It sits below validation, the builders and the registry client, which all need it.

/// Which optional APIs the cluster serves (found by discovery on every reconcile).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Apis {
    /// `monitoring.coreos.com/v1` with ServiceMonitors and PrometheusRules (Prometheus Operator).
    pub monitoring: bool,
    /// `keda.sh/v1alpha1` with ScaledObjects (KEDA).
    pub keda: bool,
    /// `gateway.networking.k8s.io/v1` with HTTPRoutes (Gateway API).
    pub gateway: bool,
}

impl Apis {
    /// Every optional API served.
    pub const ALL: Self = Self {
        monitoring: true,
        keda: true,
        gateway: true,
    };
    /// None served.
    pub const NONE: Self = Self {
        monitoring: false,
        keda: false,
        gateway: false,
    };
}

/// `true`: every optional API is served; `false`: none (how tests and the example renderer say it).
impl From<bool> for Apis {
    fn from(all: bool) -> Self {
        if all { Self::ALL } else { Self::NONE }
    }
}

/// An API error in words for a condition message: the server's message, reason and status code
/// (not kube's `Debug` dump); other errors with their source chain.
pub fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("{} ({}, HTTP {})", status.message, status.reason, status.code),
        other => {
            let mut message = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                message.push_str(": ");
                message.push_str(&s.to_string());
                source = s.source();
            }
            message
        }
    }
}
