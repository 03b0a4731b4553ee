//! Facts about the host the node agent runs on: its name, its addresses, its
//! sysctls.

use std::io;
use std::net::IpAddr;

use chainsmith_model::InterfaceAddress;

/// The node name kube-proxy derives from the host name (lower case).
pub fn hostname() -> io::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    Ok(name.trim().to_lowercase())
}

/// Every address on every interface of this network namespace.
pub fn interface_addresses() -> io::Result<Vec<InterfaceAddress>> {
    let mut addresses = Vec::new();
    for entry in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let Some(address) = entry.address.as_ref() else {
            continue;
        };
        let (ip, prefix_len) = if let Some(v4) = address.as_sockaddr_in() {
            let prefix = entry
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map(|m| m.ip().to_bits().count_ones());
            (IpAddr::V4(v4.ip()), prefix.unwrap_or(32))
        } else if let Some(v6) = address.as_sockaddr_in6() {
            let prefix = entry
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in6())
                .map(|m| m.ip().to_bits().count_ones());
            (IpAddr::V6(v6.ip()), prefix.unwrap_or(128))
        } else {
            continue;
        };
        addresses.push(InterfaceAddress {
            interface: entry.interface_name.clone(),
            address: ip,
            prefix_len: u8::try_from(prefix_len).unwrap_or(0),
        });
    }
    Ok(addresses)
}

/// `/proc/sys/<path>` (`net/ipv4/conf/all/route_localnet`), trimmed.
pub fn read_sysctl(path: &str) -> io::Result<String> {
    Ok(std::fs::read_to_string(format!("/proc/sys/{path}"))?
        .trim()
        .to_string())
}

/// Writes `/proc/sys/<path>` unless it already holds `value`.
pub fn write_sysctl(path: &str, value: &str) -> io::Result<()> {
    if read_sysctl(path).is_ok_and(|current| current == value) {
        return Ok(());
    }
    std::fs::write(format!("/proc/sys/{path}"), value)
}

/// Moves this process out of the OOM killer's way, as kube-proxy does.
pub fn set_oom_score_adj(value: i32) -> io::Result<()> {
    std::fs::write("/proc/self/oom_score_adj", value.to_string())
}
