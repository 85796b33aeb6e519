//! The custom resources of API group `weblab.dev`, version `v1alpha1`: one
//! module per kind, plus the vocabulary and conditions they share.

// kube-derive takes one `printcolumn(...)` per column, all with the same
// argument names; clippy reads those as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod alarm;
pub mod change_window;
pub mod common;
pub mod conditions;
pub mod merge_train_exception;
pub mod merge_train_pause;
pub mod rollback;
pub mod weblab_dial;
pub mod weblab_notifier;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

pub use alarm::Alarm;
pub use change_window::ChangeWindow;
pub use merge_train_exception::MergeTrainException;
pub use merge_train_pause::MergeTrainPause;
pub use rollback::Rollback;
pub use weblab_dial::WeblabDial;
pub use weblab_notifier::WeblabNotifier;

/// The API group of every kind.
pub const GROUP: &str = "weblab.dev";

/// Every CustomResourceDefinition this operator serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        WeblabDial::crd(),
        Alarm::crd(),
        Rollback::crd(),
        MergeTrainPause::crd(),
        ChangeWindow::crd(),
        MergeTrainException::crd(),
        WeblabNotifier::crd(),
    ];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                sign_integer_formats(schema);
            }
        }
    }
    crds
}

/// schemars names unsigned integers' formats `uint32` and the like, which
/// the API server does not know (it warns on every apply); the signed format
/// with the `minimum: 0` schemars also writes says the same.
fn sign_integer_formats(schema: &mut JSONSchemaProps) {
    if let Some(format) = schema.format.as_mut()
        && let Some(signed) = format.strip_prefix('u').filter(|f| f.starts_with("int"))
    {
        *format = signed.to_owned();
    }
    let children = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(schema.items.as_mut().and_then(|items| match items {
            JSONSchemaPropsOrArray::Schema(item) => Some(item.as_mut()),
            JSONSchemaPropsOrArray::Schemas(_) => None,
        }))
        .chain(
            schema
                .additional_properties
                .as_mut()
                .and_then(|extra| match extra {
                    JSONSchemaPropsOrBool::Schema(value) => Some(value.as_mut()),
                    JSONSchemaPropsOrBool::Bool(_) => None,
                }),
        );
    for child in children {
        sign_integer_formats(child);
    }
}

/// Every CRD as multi-document YAML, as committed under `crds/`.
pub fn crds_yaml() -> crate::Result<String> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd).map_err(crate::Error::Yaml)?);
    }
    Ok(out)
}
