//! Manifest YAML -> model Services and EndpointSlices (`parse_manifests`).
//!
//! Input: the text of one manifest file (multi-document YAML, `kind: List`).
//! Checks: no panic; merging the result into itself (every object a
//! duplicate) keeps the object counts and warns once per object.

#![no_main]

use chainsmith_k8s::{Manifests, parse_manifests};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_manifests(text, "fuzz.yaml") {
        Ok(manifests) => {
            for diagnostic in &manifests.diagnostics {
                let _ = diagnostic.to_string();
            }
            let mut merged = manifests.clone();
            merged.extend(manifests.clone());
            assert_eq!(merged.services.len(), manifests.services.len());
            assert_eq!(merged.endpoint_slices.len(), manifests.endpoint_slices.len());
            let objects = manifests.services.len() + manifests.endpoint_slices.len();
            assert_eq!(
                merged.diagnostics.len(),
                2 * manifests.diagnostics.len() + objects
            );
            let mut empty = Manifests::default();
            empty.extend(manifests.clone());
            assert_eq!(empty, manifests);
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
