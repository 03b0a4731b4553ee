//! The one translation layer from Kubernetes objects into chainsmith's domain
//! model (`chainsmith-model`).
//!
//! Inputs: `k8s-openapi` `Service` / `EndpointSlice` values (from a watch or
//! anywhere else), manifest text (multi-document YAML, `kind: List`) and the
//! `node.yaml` text of node and proxier settings. Outputs: model
//! [`Service`](chainsmith_model::Service)s, [`EndpointSlice`](chainsmith_model::EndpointSlice)s
//! and a [`NodeConfig`](chainsmith_model::NodeConfig), plus
//! [`Diagnostic`](chainsmith_model::Diagnostic)s for every input that was skipped or changed.
//!
//! It reads objects the way kube-proxy v1.33 does (headless and ExternalName
//! Services skipped, sloppy IP parsing, only the first endpoint address, ...)
//! and refuses names that could corrupt an iptables-restore payload, so later
//! stages can trust every value. Bad objects are skipped with a diagnostic;
//! only unreadable YAML or an invalid node config is an error.
//!
//! For the node binary it also reads the proxier's own `v1/Node`
//! ([`node_from_k8s`]), the cluster's ServiceCIDR objects
//! ([`service_cidr_from_k8s`]) and kube-proxy's `--config` file
//! ([`parse_proxy_configuration`], upstream's defaults and validation).
//!
//! Architecture invariant: this is the only crate that knows `k8s-openapi` or
//! YAML. It knows nothing of iptables, chain names or rules, and does no I/O
//! (callers pass text in), no clock, no randomness.
//!
//! Start reading at [`service_from_k8s`] and [`endpoint_slice_from_k8s`], then
//! [`parse_manifests`] and [`parse_node_config`].

mod config_file;
mod endpoints;
mod manifest;
mod node;
mod node_object;
mod proxy_config;
mod report;
mod service;
mod service_cidr;
mod yaml;

pub use config_file::ConfigFileError;
pub use endpoints::endpoint_slice_from_k8s;
pub use manifest::{ManifestError, Manifests, parse_manifests};
pub use node::{parse_go_duration_ms, parse_node_config};
pub use node_object::node_from_k8s;
pub use proxy_config::{
    ConntrackSettings, DEFAULT_HEALTHZ_PORT, DEFAULT_METRICS_PORT, DetectLocalMode,
    KUBE_PROXY_MIN_SYNC_PERIOD_MS, NodePortAddresses, PROXY_CONFIG_API_VERSION, PROXY_CONFIG_KIND,
    PROXY_FLAGS, ProxyConfiguration, ProxyMode, parse_proxy_configuration, proxy_configuration_with_flags,
};
pub use service::service_from_k8s;
pub use service_cidr::service_cidr_from_k8s;
pub use yaml::MAX_INPUT_BYTES;

#[cfg(test)]
mod test_support {
    use std::path::{Path, PathBuf};

    /// Every file called `name` under the workspace's conformance data, sorted.
    pub fn conformance_files(name: &str) -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/conformance");
        let mut found = Vec::new();
        collect(&root, name, &mut found);
        found.sort();
        found
            .into_iter()
            .map(|path| {
                let label = path.strip_prefix(&root).unwrap().display().to_string();
                (label, std::fs::read_to_string(&path).unwrap())
            })
            .collect()
    }

    fn collect(dir: &Path, name: &str, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                collect(&path, name, found);
            } else if path.file_name().is_some_and(|n| n == name) {
                found.push(path);
            }
        }
    }
}
