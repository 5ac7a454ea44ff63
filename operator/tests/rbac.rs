//! The chart's RBAC grants the operator exactly what it uses: the roles bound to the operator's
//! ServiceAccount in `helm template charts/mlkube` against
//! `mlkube_operator::controller::required_access()` (the child kinds the controllers own, as
//! `apply_children` applies and prunes them, plus the requests outside the apply). Anything
//! missing is a `Forbidden` at run time; anything extra is privilege the operator never uses.
//!
//! Ignored by default: it needs helm. `scripts/check-chart.sh` and `scripts/test-all` install it
//! into `.cache/tools/` and set `MLKUBE_HELM`; without helm the test fails, never passes.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use mlkube_operator::apply::GroupResource;
use mlkube_operator::controller::required_access;
use serde_json::Value;

type Access = BTreeMap<GroupResource, BTreeSet<String>>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `MLKUBE_HELM`, else the helm scripts/check-chart.sh installs under `.cache/tools/`, else `helm`
/// on `PATH`.
fn helm() -> PathBuf {
    if let Some(helm) = std::env::var_os("MLKUBE_HELM") {
        return root().join(helm);
    }
    let cached = std::fs::read_dir(root().join(".cache/tools"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path().join("helm"))
        .filter(|p| p.is_file())
        .max();
    if let Some(helm) = cached {
        return helm;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("helm"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("helm not found (MLKUBE_HELM, .cache/tools/, PATH); scripts/check-chart.sh installs it")
        })
}

/// The chart's objects, rendered with `values` (a file under charts/mlkube/ci/).
fn render(values: &str) -> Vec<Value> {
    let output = Command::new(helm())
        .current_dir(root())
        .args([
            "template",
            "mlkube",
            "charts/mlkube",
            "--namespace",
            "mlkube",
            "-f",
        ])
        .arg(format!("charts/mlkube/ci/{values}"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "helm template -f {values}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|o| o.is_object())
        .collect()
}

/// The rules of every Role and ClusterRole bound to the operator's ServiceAccount, by group and
/// resource; panics on a rule the comparison cannot read (resourceNames, non-resource URLs,
/// wildcards), which the chart must not grant.
fn granted_to_operator(objects: &[Value], service_account: &str) -> Access {
    let bound: BTreeSet<(String, String)> = objects
        .iter()
        .filter(|o| matches!(o["kind"].as_str(), Some("RoleBinding" | "ClusterRoleBinding")))
        .filter(|b| {
            b["subjects"].as_array().into_iter().flatten().any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == service_account && s["namespace"] == "mlkube"
            })
        })
        .map(|b| {
            (
                b["roleRef"]["kind"].as_str().unwrap().to_owned(),
                b["roleRef"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        !bound.is_empty(),
        "no role is bound to ServiceAccount {service_account}"
    );
    let mut access = Access::new();
    let mut seen = BTreeSet::new();
    for role in objects.iter().filter(|o| {
        let key = (
            o["kind"].as_str().unwrap_or_default().to_owned(),
            o["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
        );
        bound.contains(&key)
    }) {
        seen.insert((
            role["kind"].as_str().unwrap().to_owned(),
            role["metadata"]["name"].as_str().unwrap().to_owned(),
        ));
        for rule in role["rules"].as_array().unwrap() {
            for key in ["resourceNames", "nonResourceURLs"] {
                assert!(rule.get(key).is_none(), "a rule with {key}: {rule}");
            }
            let strings = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .unwrap_or_else(|| panic!("a rule without {key}: {rule}"))
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect()
            };
            let verbs = strings("verbs");
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    assert!(
                        group != "*" && resource != "*" && !verbs.iter().any(|v| v == "*"),
                        "a wildcard rule: {rule}"
                    );
                    access
                        .entry(GroupResource {
                            group: group.clone(),
                            resource,
                        })
                        .or_default()
                        .extend(verbs.iter().cloned());
                }
            }
        }
    }
    assert_eq!(seen, bound, "a binding names a role the chart does not render");
    access
}

fn required() -> Access {
    required_access()
        .into_iter()
        .map(|(resource, verbs)| (resource, verbs.into_iter().map(str::to_owned).collect()))
        .collect()
}

/// Every (group, resource, verb) in `a` and not in `b`, one per line.
fn difference(a: &Access, b: &Access) -> Vec<String> {
    let mut out = Vec::new();
    for (resource, verbs) in a {
        let other = b.get(resource);
        for verb in verbs {
            if !other.is_some_and(|o| o.contains(verb)) {
                out.push(format!("{}/{} {verb}", resource.group, resource.resource));
            }
        }
    }
    out
}

fn assert_exactly(granted: &Access, required: &Access, what: &str) {
    let missing = difference(required, granted);
    let extra = difference(granted, required);
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: the chart's RBAC differs from what the operator uses\n  missing (the operator would get 403): {missing:?}\n  extra (never used): {extra:?}"
    );
}

#[test]
#[ignore = "needs helm; scripts/check-chart.sh and scripts/test-all install it and run ignored tests"]
fn the_chart_grants_exactly_what_the_operator_uses() {
    let required = required();
    // Sanity: the derivation saw both controllers' children and the requests around them.
    for (group, resource) in [
        ("apps", "deployments"),
        ("", "persistentvolumeclaims"),
        ("keda.sh", "scaledobjects"),
        ("gateway.networking.k8s.io", "httproutes"),
        ("mlkube.io", "modeldeployments/status"),
        ("coordination.k8s.io", "leases"),
    ] {
        let key = GroupResource {
            group: group.to_owned(),
            resource: resource.to_owned(),
        };
        assert!(required.contains_key(&key), "{group}/{resource} not derived");
    }
    assert!(
        !required[&GroupResource {
            group: String::new(),
            resource: "persistentvolumeclaims".to_owned(),
        }]
            .contains("delete"),
        "claims are never deleted"
    );

    // Everything on: three replicas (leader election and its Lease Role), one watched namespace (a
    // Role instead of the ClusterRole), Secrets readable.
    let ha = render("ha-values.yaml");
    assert_exactly(
        &granted_to_operator(&ha, "mlkube-operator"),
        &required,
        "ha-values.yaml",
    );

    // The default install: one replica, so no leader election and no Lease access; everything
    // else as above, cluster-wide.
    let default = render("default-values.yaml");
    let mut without_leases = required.clone();
    without_leases.remove(&GroupResource {
        group: "coordination.k8s.io".to_owned(),
        resource: "leases".to_owned(),
    });
    assert_exactly(
        &granted_to_operator(&default, "mlkube-operator"),
        &without_leases,
        "default-values.yaml",
    );
}
