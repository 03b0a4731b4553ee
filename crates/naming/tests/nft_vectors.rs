//! Upstream's chain-name vectors for nftables mode
//! (`testdata/conformance-nft/chain-name-selftest`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use chainsmith_naming::nft::{endpoint_base, service_port_base};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    name: String,
    namespace: String,
    service: String,
    port: String,
    protocol: String,
    #[serde(default)]
    endpoint: Option<String>,
    expected: String,
}

#[derive(Deserialize)]
struct Vectors {
    #[serde(rename = "servicePortChainNameBase")]
    service: Vec<Vector>,
    #[serde(rename = "servicePortEndpointChainNameBase")]
    endpoint: Vec<Vector>,
}

fn vectors() -> Vectors {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/conformance-nft/chain-name-selftest/vectors.yaml"
    );
    let text = std::fs::read_to_string(path).expect("vectors.yaml");
    serde_saphyr::from_str(&text).expect("vectors parse")
}

#[test]
fn service_port_bases_match_upstream() {
    let vectors = vectors().service;
    assert_eq!(vectors.len(), 3);
    for v in vectors {
        let base = service_port_base(&v.namespace, &v.service, &v.protocol, &v.port);
        assert_eq!(base, v.expected, "{}", v.name);
    }
}

#[test]
fn endpoint_bases_match_upstream_including_cut_ones() {
    let vectors = vectors().endpoint;
    assert_eq!(vectors.len(), 6);
    for v in vectors {
        let endpoint = v.endpoint.as_deref().expect("endpoint");
        let (ip, port) = endpoint.rsplit_once(':').expect("ip:port");
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let base = endpoint_base(
            &v.namespace,
            &v.service,
            &v.protocol,
            &v.port,
            ip,
            port.parse().expect("port"),
        );
        assert_eq!(base, v.expected, "{}", v.name);
    }
}
