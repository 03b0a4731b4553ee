//! `networking.k8s.io/v1/ServiceCIDR` -> the Service CIDRs it contributes.

use chainsmith_model::{Diagnostic, IpNet, ObjectKey, ObjectKind, parse_cidr_sloppy};
use k8s_openapi::api::networking::v1 as networking;

use crate::report::Report;

/// The CIDRs of one ServiceCIDR object (`spec.cidrs`), as kube-proxy's
/// nftables mode takes them: every object counts, whatever its `Ready`
/// condition says and whether or not its deletion has begun (upstream's
/// informer hands kube-proxy each object until it is gone, and nothing
/// filters on status).
///
/// Returns `None` (with a warning) only when the object has no name. A CIDR
/// that does not parse is left out with a warning naming the object and the
/// field; upstream would hand it to `nft` and fail the whole sync.
pub fn service_cidr_from_k8s(
    object: &networking::ServiceCIDR,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<IpNet>> {
    let Some(name) = object.metadata.name.as_deref().filter(|n| !n.is_empty()) else {
        Report::new(ObjectKind::ServiceCidr, None, diags)
            .warn("metadata.name", "missing name (ServiceCIDR ignored)");
        return None;
    };
    // ServiceCIDRs are cluster-scoped: the key's namespace is empty.
    let mut report = Report::new(ObjectKind::ServiceCidr, Some(ObjectKey::new("", name)), diags);
    let listed = object
        .spec
        .as_ref()
        .and_then(|spec| spec.cidrs.as_deref())
        .unwrap_or_default();
    let cidrs = listed
        .iter()
        .enumerate()
        .filter_map(|(i, text)| {
            let net = parse_cidr_sloppy(text);
            if net.is_none() {
                report.warn(
                    format!("spec.cidrs[{i}]"),
                    format!("invalid CIDR {text:?} (ignored)"),
                );
            }
            net
        })
        .collect();
    Some(cidrs)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn translate(object: Value) -> (Option<Vec<String>>, Vec<String>) {
        let object: networking::ServiceCIDR = serde_json::from_value(object).unwrap();
        let mut diags = Vec::new();
        let cidrs = service_cidr_from_k8s(&object, &mut diags)
            .map(|cidrs| cidrs.iter().map(ToString::to_string).collect());
        (cidrs, diags.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn every_cidr_of_the_spec_whatever_the_status() {
        let (cidrs, diags) = translate(json!({
            "metadata": {"name": "kubernetes", "deletionTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"cidrs": ["10.96.0.0/16", "fd00:10:96::/112"]},
            "status": {"conditions": [{
                "type": "Ready", "status": "False", "reason": "Terminating",
                "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z",
            }]},
        }));
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(cidrs.unwrap(), ["10.96.0.0/16", "fd00:10:96::/112"]);
    }

    #[test]
    fn a_bad_cidr_is_named_and_ignored() {
        let (cidrs, diags) = translate(json!({
            "metadata": {"name": "extra"},
            "spec": {"cidrs": ["10.97.0.0/33", "010.098.000.000/016", "::ffff:10.99.0.0/112"]},
        }));
        // Sloppy parsing, as upstream's: leading zeros are decimal.
        assert_eq!(cidrs.unwrap(), ["10.98.0.0/16"]);
        assert_eq!(
            diags,
            [
                "ServiceCIDR extra: spec.cidrs[0]: invalid CIDR \"10.97.0.0/33\" (ignored)",
                "ServiceCIDR extra: spec.cidrs[2]: invalid CIDR \"::ffff:10.99.0.0/112\" (ignored)",
            ]
        );
    }

    #[test]
    fn no_spec_is_no_cidr_and_no_name_is_no_object() {
        let (cidrs, diags) = translate(json!({"metadata": {"name": "empty"}}));
        assert_eq!(cidrs.unwrap(), Vec::<String>::new());
        assert!(diags.is_empty());
        let (cidrs, diags) = translate(json!({"metadata": {}, "spec": {"cidrs": ["10.96.0.0/16"]}}));
        assert!(cidrs.is_none());
        assert_eq!(
            diags,
            ["ServiceCIDR: metadata.name: missing name (ServiceCIDR ignored)"]
        );
    }
}
