//! Security contexts. Every pod the operator creates meets the `restricted` Pod Security Standard,
//! except the node sampler (see [`node_sampler_container`]).

use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext, SeccompProfile, SecurityContext};

/// The non-root uid/gid pods run as (the distroless `nonroot` user).
pub const NON_ROOT_UID: i64 = 65532;

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

fn drop_all() -> Capabilities {
    Capabilities {
        add: None,
        drop: Some(vec!["ALL".to_owned()]),
    }
}

/// Pod-level context of restricted pods: non-root uid/gid, fsGroup for volumes, RuntimeDefault
/// seccomp.
pub fn restricted_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NON_ROOT_UID),
        run_as_group: Some(NON_ROOT_UID),
        fs_group: Some(NON_ROOT_UID),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

/// Container-level context of restricted containers: read-only root filesystem, no privilege
/// escalation, every capability dropped.
pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(drop_all()),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

/// Pod-level context of the node sampler: RuntimeDefault seccomp only. The sampler runs as
/// uid 0 because the kubelet's pod-resources socket is owned by root; with every capability
/// dropped that uid cannot bypass file permissions or change the host.
pub fn node_sampler_pod() -> PodSecurityContext {
    PodSecurityContext {
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

/// Container-level context of the node sampler: uid 0 (for the pod-resources socket), read-only
/// root filesystem, no privilege escalation, every capability dropped. Together with the pod's
/// `hostPID` and read-only hostPath mounts this needs a namespace at the `privileged` Pod
/// Security level; nothing else in mlkube does.
pub fn node_sampler_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_user: Some(0),
        run_as_non_root: Some(false),
        privileged: Some(false),
        capabilities: Some(drop_all()),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}
