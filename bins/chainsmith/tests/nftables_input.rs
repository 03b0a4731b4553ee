//! Bad input in nftables mode: nothing that would break an `nft -f` line
//! (braces, semicolons, `#`, quotes, newlines in a name) reaches the
//! transaction; each such object is refused with a warning naming it and
//! the field, and the other Services' rules are still written, in a
//! transaction the kernel model (and, with CHAINSMITH_KERNEL_TESTS=1, the
//! real `nft` in a fresh network namespace) accepts.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

use chainsmith_nftables::{Family, Table, read_transaction};
use chainsmith_testkit::{Netns, kernel_tests_enabled};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: "we{b", namespace: shop}
spec:
  clusterIP: 10.96.0.21
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: "a;b"}
spec:
  clusterIP: 10.96.0.22
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: shop}
spec:
  clusterIP: 10.96.0.23
  ports: [{name: "p#1", port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: "q\"uote", namespace: shop}
spec:
  clusterIP: 10.96.0.24
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints: [{addresses: [10.244.1.5]}]
ports: [{name: http, port: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: "web-2"
  namespace: shop
  labels: {kubernetes.io/service-name: "we}b"}
addressType: IPv4
endpoints: [{addresses: [10.244.1.6]}]
ports: [{name: "h{ttp", port: 8080, protocol: TCP}]
"#;

#[test]
fn unsafe_names_never_reach_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster.yaml");
    std::fs::write(&cluster, CLUSTER).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_chainsmith"))
        .args(["compile", "--mode", "nftables"])
        .arg(&cluster)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    for (object, field) in [
        ("Service shop/we{b", "metadata.name"),
        ("Service a;b/api", "metadata.namespace"),
        ("Service shop/dns", "spec.ports[0].name"),
        ("Service shop/q\"uote", "metadata.name"),
        (
            "EndpointSlice shop/web-2",
            "metadata.labels[\"kubernetes.io/service-name\"]",
        ),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("warning:") && l.contains(object) && l.contains(field)),
            "no warning naming {object} and {field} in:\n{stderr}"
        );
    }
    let transaction = String::from_utf8(output.stdout).unwrap();
    for fragment in ["{b", ";b", "#1", "uote", "h{ttp"] {
        assert!(
            !transaction.contains(fragment),
            "{fragment} reached the transaction"
        );
    }
    let mut table = Table::new(Family::Ip);
    table
        .apply(&read_transaction(&transaction, Family::Ip).unwrap())
        .unwrap();
    assert!(
        table
            .chain_names()
            .any(|c| c.starts_with("service-") && c.ends_with("-shop/web/tcp/http")),
        "the good Service is still written"
    );
    if kernel_tests_enabled("unsafe_names_never_reach_the_transaction") {
        let netns = Netns::new("nftin").unwrap();
        netns
            .run_with_input("nft", &["-f", "-"], transaction.as_bytes())
            .unwrap_or_else(|e| panic!("the kernel refused the transaction: {e}"));
    }
}
