//! A client, a node, its uplink and its pods: network namespaces wired with
//! veth pairs.
//!
//! ```text
//!  client                      node                          pod i (one veth each)
//!  203.0.113.2/24      <->     203.0.113.1/24   (node IP)
//!  203.0.113.130/24            2001:db8:1::1/64
//!  2001:db8:1::2/64            192.0.2.1/32       per pod link  <->  192.0.2.(11+i)/32
//!  2001:db8:1::130/64          2001:db8:2::1/128  per pod link  <->  2001:db8:2::(11+i)/128
//!                              198.51.100.253/30  <->  uplink 198.51.100.254/30
//!                              2001:db8:4::1/64   <->  uplink 2001:db8:4::2/64
//! ```
//!
//! The client routes the Service ranges (198.51.100.0/24, 2001:db8:3::/64)
//! and the pod ranges to the node; the node routes each pod over its link
//! (like a routed CNI, no bridge) and everything else to the uplink (its
//! default routes, so traffic that is not translated is forwarded and
//! filtered as on a real node, not answered with "no route"); the uplink
//! forwards nothing; pods route everything to the node. Addresses come only
//! from the documentation ranges (the uplink's 198.51.100.252/30 is not to be
//! used for Services). DAD is off, so IPv6 addresses are usable at once; the
//! client's second addresses are never chosen as a source unless bound.
//! Everything is removed when the [`Topology`] drops.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{CommandError, Netns};

/// One pod: its namespace and addresses.
#[derive(Debug)]
pub struct Pod {
    /// The pod's name (what its echo server answers with).
    pub name: String,
    /// The pod's namespace.
    pub netns: Netns,
    /// 192.0.2.(11+i).
    pub ipv4: Ipv4Addr,
    /// 2001:db8:2::(11+i) (the digits read as hex, as written).
    pub ipv6: Ipv6Addr,
    /// The node's end of the pod's veth pair.
    pub node_interface: String,
}

impl Pod {
    /// The pod's address of a family.
    pub fn ip(&self, ipv6: bool) -> IpAddr {
        if ipv6 {
            IpAddr::V6(self.ipv6)
        } else {
            IpAddr::V4(self.ipv4)
        }
    }
}

/// The namespaces of one test's little cluster.
#[derive(Debug)]
pub struct Topology {
    /// The pods, in the order given. Declared first: dropped first.
    pub pods: Vec<Pod>,
    /// The client (outside the cluster).
    pub client: Netns,
    /// The node: kube-proxy's rules go here.
    pub node: Netns,
    /// Where the node's default routes lead; drops what it gets.
    pub uplink: Netns,
    /// The node's end of the client link.
    pub node_client_interface: String,
    /// The node's end of the uplink.
    pub node_uplink_interface: String,
}

impl Topology {
    /// The node IP (client side).
    pub const NODE_IPV4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    /// The node IP (client side), IPv6.
    pub const NODE_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
    /// The client's primary address.
    pub const CLIENT_IPV4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
    /// The client's primary address, IPv6.
    pub const CLIENT_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
    /// The client's second address (outside 203.0.113.0/25).
    pub const CLIENT2_IPV4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 130);
    /// The client's second address, IPv6.
    pub const CLIENT2_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x130);
    /// The node's address on every pod link.
    pub const NODE_POD_SIDE_IPV4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    /// The node's address on every pod link, IPv6.
    pub const NODE_POD_SIDE_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
    /// The pod network (the ClusterCIDR a node config should name).
    pub const POD_CIDR_IPV4: &str = "192.0.2.0/24";
    /// The pod network, IPv6.
    pub const POD_CIDR_IPV6: &str = "2001:db8:2::/64";
    /// Where cluster IPs, load-balancer IPs and external IPs live (routed
    /// from the client to the node).
    pub const SERVICE_CIDR_IPV4: &str = "198.51.100.0/24";
    /// Service addresses, IPv6.
    pub const SERVICE_CIDR_IPV6: &str = "2001:db8:3::/64";

    /// Builds a client, a node and one namespace per name in `pods`, wired
    /// and addressed for IPv4 and IPv6, and the uplink the node's default
    /// routes use. The node forwards both families.
    pub fn new(pods: &[&str]) -> Result<Topology, CommandError> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        if pods.len() > 80 {
            return Err(CommandError(format!("{} pods: at most 80", pods.len())));
        }
        // Interface names: "cs" + pid and counter in base 36 + a suffix, at
        // most 15 characters (pid <= 2^22: 5 digits; counter: up to 3).
        let tag = format!(
            "cs{}{}",
            base36(u64::from(std::process::id())),
            base36((COUNTER.fetch_add(1, Ordering::Relaxed) % 46_656) as u64)
        );
        let client = Netns::new("client")?;
        let node = Netns::new("node")?;
        let uplink = Netns::new("uplink")?;
        let mut pod_namespaces = Vec::with_capacity(pods.len());
        for _ in pods {
            pod_namespaces.push(Netns::new("pod")?);
        }
        for netns in [&client, &node, &uplink].into_iter().chain(&pod_namespaces) {
            // No duplicate address detection: IPv6 addresses work at once.
            sysctl(netns, "net.ipv6.conf.all.accept_dad", "0")?;
            sysctl(netns, "net.ipv6.conf.default.accept_dad", "0")?;
        }
        sysctl(&node, "net.ipv4.ip_forward", "1")?;
        sysctl(&node, "net.ipv6.conf.all.forwarding", "1")?;
        // client <-> node
        let node_client_interface = format!("{tag}n");
        let client_interface = format!("{tag}c");
        veth(&node, &node_client_interface, &client, &client_interface)?;
        for addr in ["203.0.113.2/24", "203.0.113.130/24"] {
            ip(&client, &["addr", "add", addr, "dev", &client_interface])?;
        }
        ip(
            &client,
            &[
                "addr",
                "add",
                "2001:db8:1::2/64",
                "dev",
                &client_interface,
                "nodad",
            ],
        )?;
        // Deprecated (preferred_lft 0): never picked as a source address
        // unless bound explicitly, like the secondary IPv4 address.
        ip(
            &client,
            &[
                "addr",
                "add",
                "2001:db8:1::130/64",
                "dev",
                &client_interface,
                "nodad",
                "preferred_lft",
                "0",
            ],
        )?;
        ip(&client, &["link", "set", &client_interface, "up"])?;
        for (cidr, via) in [
            (Self::SERVICE_CIDR_IPV4, "203.0.113.1"),
            (Self::POD_CIDR_IPV4, "203.0.113.1"),
            (Self::SERVICE_CIDR_IPV6, "2001:db8:1::1"),
            (Self::POD_CIDR_IPV6, "2001:db8:1::1"),
        ] {
            ip(&client, &["route", "add", cidr, "via", via])?;
        }
        ip(
            &node,
            &["addr", "add", "203.0.113.1/24", "dev", &node_client_interface],
        )?;
        ip(
            &node,
            &[
                "addr",
                "add",
                "2001:db8:1::1/64",
                "dev",
                &node_client_interface,
                "nodad",
            ],
        )?;
        ip(&node, &["link", "set", &node_client_interface, "up"])?;

        // node <-> uplink: the rest of the network, where the node's default
        // routes lead. It forwards nothing, so whatever the node forwards
        // there untranslated ends. (Not the client: a packet leaving by the
        // link it came in on makes the node send an ICMP redirect, whose
        // rate limit then swallows a REJECT's ICMP error to the same host.)
        let node_uplink_interface = format!("{tag}u");
        let uplink_interface = format!("{tag}w");
        veth(&node, &node_uplink_interface, &uplink, &uplink_interface)?;
        ip(
            &uplink,
            &["addr", "add", "198.51.100.254/30", "dev", &uplink_interface],
        )?;
        ip(
            &uplink,
            &[
                "addr",
                "add",
                "2001:db8:4::2/64",
                "dev",
                &uplink_interface,
                "nodad",
            ],
        )?;
        ip(&uplink, &["link", "set", &uplink_interface, "up"])?;
        ip(
            &node,
            &["addr", "add", "198.51.100.253/30", "dev", &node_uplink_interface],
        )?;
        ip(
            &node,
            &[
                "addr",
                "add",
                "2001:db8:4::1/64",
                "dev",
                &node_uplink_interface,
                "nodad",
            ],
        )?;
        ip(&node, &["link", "set", &node_uplink_interface, "up"])?;
        ip(&node, &["route", "add", "default", "via", "198.51.100.254"])?;
        ip(&node, &["-6", "route", "add", "default", "via", "2001:db8:4::2"])?;

        // node <-> each pod
        let mut built = Vec::with_capacity(pods.len());
        for (i, (name, netns)) in pods.iter().zip(pod_namespaces).enumerate() {
            let host = 11 + i;
            let ipv4 = Ipv4Addr::new(192, 0, 2, host as u8);
            let ipv6: Ipv6Addr = format!("2001:db8:2::{host}")
                .parse()
                .map_err(|e| CommandError(format!("pod address: {e}")))?;
            let node_interface = format!("{tag}p{i}");
            let pod_interface = format!("{tag}e{i}");
            veth(&node, &node_interface, &netns, &pod_interface)?;
            ip(&node, &["addr", "add", "192.0.2.1/32", "dev", &node_interface])?;
            ip(
                &node,
                &[
                    "addr",
                    "add",
                    "2001:db8:2::1/128",
                    "dev",
                    &node_interface,
                    "nodad",
                ],
            )?;
            ip(&node, &["link", "set", &node_interface, "up"])?;
            ip(
                &node,
                &["route", "add", &format!("{ipv4}/32"), "dev", &node_interface],
            )?;
            ip(
                &node,
                &["route", "add", &format!("{ipv6}/128"), "dev", &node_interface],
            )?;
            ip(
                &netns,
                &["addr", "add", &format!("{ipv4}/32"), "dev", &pod_interface],
            )?;
            ip(
                &netns,
                &[
                    "addr",
                    "add",
                    &format!("{ipv6}/128"),
                    "dev",
                    &pod_interface,
                    "nodad",
                ],
            )?;
            ip(&netns, &["link", "set", &pod_interface, "up"])?;
            ip(&netns, &["route", "add", "192.0.2.1/32", "dev", &pod_interface])?;
            ip(
                &netns,
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    "192.0.2.1",
                    "dev",
                    &pod_interface,
                ],
            )?;
            ip(
                &netns,
                &["route", "add", "2001:db8:2::1/128", "dev", &pod_interface],
            )?;
            ip(
                &netns,
                &[
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    "2001:db8:2::1",
                    "dev",
                    &pod_interface,
                ],
            )?;
            built.push(Pod {
                name: (*name).to_owned(),
                netns,
                ipv4,
                ipv6,
                node_interface,
            });
        }
        // A veth end carries packets only once the kernel's link watcher has
        // seen both ends up (until then its queue discards them: the first
        // ARP/ND exchange would be lost and retried a second later). That
        // can take up to a second, so wait for it.
        let deadline = Instant::now() + LINK_UP_TIMEOUT;
        wait_up(&client, &client_interface, deadline)?;
        wait_up(&node, &node_client_interface, deadline)?;
        wait_up(&node, &node_uplink_interface, deadline)?;
        wait_up(&uplink, &uplink_interface, deadline)?;
        for (i, pod) in built.iter().enumerate() {
            wait_up(&node, &pod.node_interface, deadline)?;
            wait_up(&pod.netns, &format!("{tag}e{i}"), deadline)?;
        }
        Ok(Topology {
            pods: built,
            client,
            node,
            uplink,
            node_client_interface,
            node_uplink_interface,
        })
    }

    /// Sets `net.ipv4.conf.all.route_localnet=1` in the node, as kube-proxy
    /// does when localhost NodePorts are on (needed to DNAT 127.0.0.1 away).
    pub fn enable_route_localnet(&self) -> Result<(), CommandError> {
        sysctl(&self.node, "net.ipv4.conf.all.route_localnet", "1")
    }

    /// The pod called `name`.
    pub fn pod(&self, name: &str) -> Result<&Pod, CommandError> {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| CommandError(format!("no pod {name}")))
    }

    /// The node's addresses as `(interface, cidr)`, loopback included: what
    /// a node config's `interfaceAddresses` should list.
    pub fn node_interface_addresses(&self) -> Vec<(String, String)> {
        let mut addresses = vec![
            ("lo".to_owned(), "127.0.0.1/8".to_owned()),
            ("lo".to_owned(), "::1/128".to_owned()),
            (self.node_client_interface.clone(), "203.0.113.1/24".to_owned()),
            (self.node_client_interface.clone(), "2001:db8:1::1/64".to_owned()),
            (self.node_uplink_interface.clone(), "198.51.100.253/30".to_owned()),
            (self.node_uplink_interface.clone(), "2001:db8:4::1/64".to_owned()),
        ];
        for pod in &self.pods {
            addresses.push((pod.node_interface.clone(), "192.0.2.1/32".to_owned()));
            addresses.push((pod.node_interface.clone(), "2001:db8:2::1/128".to_owned()));
        }
        addresses
    }
}

/// How long links may take to come up.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits until `interface` in `netns` is operationally up.
fn wait_up(netns: &Netns, interface: &str, deadline: Instant) -> Result<(), CommandError> {
    loop {
        let shown = netns.run("ip", &["-o", "link", "show", "dev", interface])?;
        if shown.contains(" state UP ") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CommandError(format!(
                "{interface} in {} did not come up: {shown}",
                netns.name()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

fn ip(netns: &Netns, args: &[&str]) -> Result<(), CommandError> {
    netns.run("ip", args).map(drop)
}

fn sysctl(netns: &Netns, key: &str, value: &str) -> Result<(), CommandError> {
    netns.run("sysctl", &["-qw", &format!("{key}={value}")]).map(drop)
}

/// A veth pair created from inside `a` with its peer created straight in
/// `b`: neither end ever exists in the host's namespace.
fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) -> Result<(), CommandError> {
    ip(
        a,
        &[
            "link",
            "add",
            a_name,
            "type",
            "veth",
            "peer",
            "name",
            b_name,
            "netns",
            b.name(),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_fit() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        let longest = format!("cs{}{}p79", base36(1 << 22), base36(46_655));
        assert!(longest.len() <= 15, "{longest}");
    }
}
