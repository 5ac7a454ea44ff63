//! The production settings both CRDs share, checked and with their defaults resolved: the
//! rolling update, the PodDisruptionBudget, placement and exposure.

use k8s_openapi::api::apps::v1::RollingUpdateDeployment;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::ValidationError;
use crate::crd::workload::{DisruptionBudgetSpec, ExposureSpec, RolloutStrategySpec};

/// Extended resources that are GPUs: a model server requesting one gets the GPU rollout default.
const GPU_RESOURCES: [&str; 3] = ["nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915"];

/// Whether the container requests (or is limited to) a GPU, including NVIDIA MIG slices.
pub fn requests_gpu(resources: Option<&ResourceRequirements>) -> bool {
    let Some(resources) = resources else {
        return false;
    };
    [&resources.requests, &resources.limits]
        .into_iter()
        .flatten()
        .flat_map(|map| map.iter())
        .any(|(name, quantity)| {
            (GPU_RESOURCES.contains(&name.as_str()) || name.starts_with("nvidia.com/mig-"))
                && quantity.0.trim() != "0"
        })
}

/// A number or a percentage (`25%`), as Deployments and PodDisruptionBudgets take them.
fn int_or_percent(field: &'static str, value: &IntOrString) -> Result<IntOrString, ValidationError> {
    match value {
        IntOrString::Int(n) if *n >= 0 => Ok(value.clone()),
        IntOrString::Int(_) => Err(ValidationError::field(field, "must not be negative")),
        IntOrString::String(s) => {
            let digits = s.strip_suffix('%').unwrap_or(s);
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) || digits.len() > 9 {
                return Err(ValidationError::field(
                    field,
                    format!("{s:?} is not a number or a percentage such as 25%"),
                ));
            }
            // A plain number written as a string means the number.
            match s.strip_suffix('%') {
                Some(_) => Ok(value.clone()),
                None => Ok(IntOrString::Int(digits.parse().unwrap_or(0))),
            }
        }
    }
}

fn is_zero(value: &IntOrString) -> bool {
    match value {
        IntOrString::Int(n) => *n == 0,
        IntOrString::String(s) => s.trim_end_matches('%').chars().all(|c| c == '0'),
    }
}

/// The RollingUpdate parameters of a Deployment, `None` for Kubernetes' defaults (`25%`/`25%`).
/// A GPU model defaults to `maxSurge: 0, maxUnavailable: 1`: a rollout replaces pods in place
/// and never needs a spare GPU (unless `maxUnavailable: 0` is set, then `maxSurge` defaults to
/// 1).
pub fn rolling_update(
    spec: Option<&RolloutStrategySpec>,
    gpu: bool,
) -> Result<Option<RollingUpdateDeployment>, ValidationError> {
    let surge = spec
        .and_then(|s| s.max_surge.as_ref())
        .map(|v| int_or_percent("spec.rolloutStrategy.maxSurge", v))
        .transpose()?;
    let unavailable = spec
        .and_then(|s| s.max_unavailable.as_ref())
        .map(|v| int_or_percent("spec.rolloutStrategy.maxUnavailable", v))
        .transpose()?;
    if surge.is_none() && unavailable.is_none() && !gpu {
        return Ok(None);
    }
    let (surge, unavailable) = if gpu {
        let unavailable = unavailable.unwrap_or(IntOrString::Int(1));
        let surge = surge.unwrap_or(IntOrString::Int(i32::from(is_zero(&unavailable))));
        (surge, unavailable)
    } else {
        (
            surge.unwrap_or_else(|| IntOrString::String("25%".to_owned())),
            unavailable.unwrap_or_else(|| IntOrString::String("25%".to_owned())),
        )
    };
    if is_zero(&surge) && is_zero(&unavailable) {
        return Err(ValidationError::field(
            "spec.rolloutStrategy",
            "maxSurge and maxUnavailable must not both be zero: the rollout could never replace a pod",
        ));
    }
    Ok(Some(RollingUpdateDeployment {
        max_surge: Some(surge),
        max_unavailable: Some(unavailable),
    }))
}

/// A PodDisruptionBudget to create: exactly one of the two set.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub min_available: Option<IntOrString>,
    pub max_unavailable: Option<IntOrString>,
}

/// The PodDisruptionBudget of a workload whose fewest pods are `min_pods`: the section's, or by
/// default `maxUnavailable: 1` from 2 pods on.
pub fn disruption_budget(
    spec: Option<&DisruptionBudgetSpec>,
    min_pods: i32,
) -> Result<Option<Budget>, ValidationError> {
    let spec = match spec {
        Some(spec) if !spec.enabled => return Ok(None),
        Some(spec) => spec.clone(),
        None if min_pods >= 2 => DisruptionBudgetSpec::default(),
        None => return Ok(None),
    };
    let min_available = spec
        .min_available
        .as_ref()
        .map(|v| int_or_percent("spec.disruptionBudget.minAvailable", v))
        .transpose()?;
    let max_unavailable = spec
        .max_unavailable
        .as_ref()
        .map(|v| int_or_percent("spec.disruptionBudget.maxUnavailable", v))
        .transpose()?;
    match (min_available, max_unavailable) {
        (Some(_), Some(_)) => Err(ValidationError::field(
            "spec.disruptionBudget",
            "set at most one of minAvailable and maxUnavailable",
        )),
        (None, None) => Ok(Some(Budget {
            min_available: None,
            max_unavailable: Some(IntOrString::Int(1)),
        })),
        (min_available, max_unavailable) => Ok(Some(Budget {
            min_available,
            max_unavailable,
        })),
    }
}

/// The exposure section, checked (exactly one of `httpRoute` and `ingress`).
pub fn exposure(spec: Option<&ExposureSpec>) -> Result<Option<ExposureSpec>, ValidationError> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    if spec.http_route.is_some() == spec.ingress.is_some() {
        return Err(ValidationError::field(
            "spec.exposure",
            "set exactly one of httpRoute and ingress",
        ));
    }
    let mut spec = spec.clone();
    if let Some(route) = &mut spec.http_route {
        if route.parent_refs.is_empty() {
            return Err(ValidationError::field(
                "spec.exposure.httpRoute.parentRefs",
                "name at least one Gateway",
            ));
        }
        route.hostnames.sort();
        route.hostnames.dedup();
    }
    Ok(Some(spec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rollout(spec: serde_json::Value, gpu: bool) -> Result<Option<(String, String)>, ValidationError> {
        let spec: RolloutStrategySpec = serde_json::from_value(spec).unwrap();
        let show = |v: &IntOrString| match v {
            IntOrString::Int(n) => n.to_string(),
            IntOrString::String(s) => s.clone(),
        };
        Ok(rolling_update(Some(&spec), gpu)?.map(|r| {
            (
                show(r.max_surge.as_ref().unwrap()),
                show(r.max_unavailable.as_ref().unwrap()),
            )
        }))
    }

    fn pair(a: &str, b: &str) -> Option<(String, String)> {
        Some((a.to_owned(), b.to_owned()))
    }

    #[test]
    fn gpu_models_roll_without_a_spare_gpu() {
        assert_eq!(rollout(json!({}), false).unwrap(), None, "Kubernetes' defaults");
        assert_eq!(rollout(json!({}), true).unwrap(), pair("0", "1"));
        assert_eq!(
            rollout(json!({"maxUnavailable": 0}), true).unwrap(),
            pair("1", "0")
        );
        assert_eq!(rollout(json!({"maxSurge": 2}), true).unwrap(), pair("2", "1"));
        assert_eq!(rollout(json!({"maxSurge": 0}), false).unwrap(), pair("0", "25%"));
        assert_eq!(
            rollout(json!({"maxSurge": "50%"}), false).unwrap(),
            pair("50%", "25%")
        );
        assert_eq!(
            rollout(json!({"maxSurge": "2"}), false).unwrap(),
            pair("2", "25%")
        );
        assert!(rollout(json!({"maxSurge": 0, "maxUnavailable": "0%"}), false).is_err());
        assert!(rollout(json!({"maxSurge": "0", "maxUnavailable": 0}), true).is_err());
        assert!(rollout(json!({"maxSurge": "a lot"}), false).is_err());
        assert!(rollout(json!({"maxSurge": -1}), false).is_err());
    }

    #[test]
    fn gpu_requests_are_recognised() {
        let r = |v: serde_json::Value| -> ResourceRequirements { serde_json::from_value(v).unwrap() };
        assert!(requests_gpu(Some(&r(json!({"limits": {"nvidia.com/gpu": 1}})))));
        assert!(requests_gpu(Some(&r(
            json!({"requests": {"nvidia.com/mig-1g.10gb": "1"}})
        ))));
        assert!(requests_gpu(Some(&r(json!({"limits": {"amd.com/gpu": "2"}})))));
        assert!(!requests_gpu(Some(&r(json!({"limits": {"nvidia.com/gpu": 0}})))));
        assert!(!requests_gpu(Some(&r(json!({"requests": {"cpu": "4"}})))));
        assert!(!requests_gpu(None));
    }

    #[test]
    fn budgets_default_on_from_two_pods() {
        let one = Some(Budget {
            min_available: None,
            max_unavailable: Some(IntOrString::Int(1)),
        });
        assert_eq!(disruption_budget(None, 1).unwrap(), None);
        assert_eq!(disruption_budget(None, 2).unwrap(), one);
        let spec = |v: serde_json::Value| -> DisruptionBudgetSpec { serde_json::from_value(v).unwrap() };
        assert_eq!(disruption_budget(Some(&spec(json!({}))), 1).unwrap(), one);
        assert_eq!(
            disruption_budget(Some(&spec(json!({"enabled": false}))), 5).unwrap(),
            None
        );
        assert_eq!(
            disruption_budget(Some(&spec(json!({"minAvailable": "50%"}))), 3).unwrap(),
            Some(Budget {
                min_available: Some(IntOrString::String("50%".into())),
                max_unavailable: None,
            })
        );
        assert!(disruption_budget(Some(&spec(json!({"minAvailable": 1, "maxUnavailable": 1}))), 3).is_err());
    }
}
