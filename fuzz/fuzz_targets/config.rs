//! `node.yaml` (`parse_node_config`) and kube-proxy's `KubeProxyConfiguration`
//! (`parse_proxy_configuration`, `proxy_configuration_with_flags`).
//!
//! Input: a configuration file's text, optionally followed by a NUL byte and
//! command-line flags, one `name=value` per line (`masquerade-all=true`).
//! The file is read as both kinds of configuration. Checks: no panic.

#![no_main]

use chainsmith_k8s::{
    parse_go_duration_ms, parse_node_config, parse_proxy_configuration, proxy_configuration_with_flags,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (file, flags) = input.split_once('\0').unwrap_or((input, ""));
    let flags: Vec<(&str, &str)> = flags
        .lines()
        .map(|line| line.trim_start_matches('-').split_once('=').unwrap_or((line, "")))
        .collect();

    if let Err(error) = parse_node_config(file, "node.yaml") {
        let _ = error.to_string();
    }
    if let Err(error) = parse_proxy_configuration(file, "config.yaml") {
        let _ = error.to_string();
    }
    if let Err(error) = proxy_configuration_with_flags(Some((file, "config.yaml")), &flags) {
        let _ = error.to_string();
    }
    if let Err(error) = proxy_configuration_with_flags(None, &flags) {
        let _ = error.to_string();
    }
    for (_, value) in &flags {
        let _ = parse_go_duration_ms(value);
    }
});
