//! The identity of the custom resource that owns the children: name, namespace, generation and
//! the controller ownerReference every child carries.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use super::ValidationError;

/// Identity of the custom resource that owns the children.
#[derive(Clone, Debug, PartialEq)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    pub generation: Option<i64>,
    pub reference: OwnerReference,
}

pub(crate) fn owner_of<K: Resource<DynamicType = ()>>(obj: &K) -> Result<Owner, ValidationError> {
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(ValidationError::MissingMetadata("name"))?;
    let namespace = obj
        .meta()
        .namespace
        .clone()
        .ok_or(ValidationError::MissingMetadata("namespace"))?;
    let reference = obj
        .controller_owner_ref(&())
        .ok_or(ValidationError::MissingMetadata("uid"))?;
    let reference = OwnerReference {
        block_owner_deletion: Some(true),
        ..reference
    };
    if name.len() > 50 {
        return Err(ValidationError::field(
            "metadata.name",
            "must be at most 50 characters",
        ));
    }
    Ok(Owner {
        name,
        namespace,
        generation: obj.meta().generation,
        reference,
    })
}
