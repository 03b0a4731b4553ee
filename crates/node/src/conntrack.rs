//! Stale UDP conntrack entries: when an endpoint of a UDP Service goes away,
//! or a Service gets endpoints again, the kernel keeps sending a "connection"
//! (a client's source port) to where its conntrack entry points, often for
//! minutes, black-holing it. After each sync the entries whose destination is
//! a Service but whose endpoint is no longer one of its serving endpoints are
//! deleted (as upstream's conntrack cleanup does).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use chainsmith_applier::Runner;
use chainsmith_model::{IpFamily, Protocol};
use chainsmith_planner::ServicePortPlan;

/// One direction of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// A UDP conntrack entry: as the client sent it, and as the reply comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The original direction.
    pub original: Tuple,
    /// The reply direction (its source is the endpoint after a DNAT).
    pub reply: Tuple,
}

/// Parses `conntrack -L -p udp` output.
pub fn parse_entries(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let mut tuples = Vec::with_capacity(2);
            let (mut src, mut dst, mut sport) = (None, None, None);
            for word in line.split_whitespace() {
                let Some((key, value)) = word.split_once('=') else {
                    continue;
                };
                match key {
                    "src" => src = value.parse().ok(),
                    "dst" => dst = value.parse().ok(),
                    "sport" => sport = value.parse().ok(),
                    "dport" => {
                        let dport = value.parse().ok()?;
                        tuples.push(Tuple {
                            src: src.take()?,
                            dst: dst.take()?,
                            sport: sport.take()?,
                            dport,
                        });
                    }
                    _ => {}
                }
            }
            match tuples.as_slice() {
                [original, reply, ..] => Some(Entry {
                    original: *original,
                    reply: *reply,
                }),
                _ => None,
            }
        })
        .collect()
}

/// Where UDP Services can be reached, and which endpoints may answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UdpFrontends {
    /// (address, port) -> endpoints (address, port) that may serve it.
    by_address: HashMap<(IpAddr, u16), HashSet<(IpAddr, u16)>>,
    /// NodePort -> endpoints (on any local address).
    by_node_port: HashMap<u16, HashSet<(IpAddr, u16)>>,
}

impl UdpFrontends {
    /// The UDP Services of the plans.
    pub fn of<'p>(plans: impl IntoIterator<Item = &'p ServicePortPlan>) -> UdpFrontends {
        let mut frontends = UdpFrontends::default();
        for plan in plans {
            let info = plan.info();
            if info.protocol != Protocol::Udp {
                continue;
            }
            let serving: HashSet<(IpAddr, u16)> = plan
                .reachable_endpoints()
                .filter_map(|ep| Some((ep.ip, ep.endpoint().rsplit_once(':')?.1.parse().ok()?)))
                .collect();
            let addresses = &info.addresses;
            let ips = std::iter::once(addresses.cluster_ip.value)
                .chain(addresses.external_ips.iter().map(|a| a.value))
                .chain(addresses.load_balancer_vips.iter().map(|a| a.value));
            for ip in ips {
                frontends
                    .by_address
                    .entry((ip, info.port))
                    .or_default()
                    .extend(serving.iter().copied());
            }
            if info.node_port != 0 {
                frontends
                    .by_node_port
                    .entry(info.node_port)
                    .or_default()
                    .extend(serving.iter().copied());
            }
        }
        frontends
    }

    /// Whether any UDP Service exists.
    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty() && self.by_node_port.is_empty()
    }

    /// The entries that lead to a Service but not to one of its serving
    /// endpoints. `local` tells the node's own addresses (for NodePorts).
    pub fn stale<'e>(&self, entries: &'e [Entry], local: &dyn Fn(&IpAddr) -> bool) -> Vec<&'e Entry> {
        entries
            .iter()
            .filter(|entry| {
                let destination = (entry.original.dst, entry.original.dport);
                let answered_by = (entry.reply.src, entry.reply.sport);
                let serving = self.by_address.get(&destination).or_else(|| {
                    local(&entry.original.dst)
                        .then(|| self.by_node_port.get(&entry.original.dport))
                        .flatten()
                });
                serving.is_some_and(|serving| !serving.contains(&answered_by))
            })
            .collect()
    }
}

/// Lists the UDP entries of a family and deletes the stale ones; returns how
/// many were deleted.
pub fn clean(
    runner: &dyn Runner,
    family: IpFamily,
    frontends: &UdpFrontends,
    local: &BTreeSet<IpAddr>,
) -> std::io::Result<usize> {
    if frontends.is_empty() {
        return Ok(0);
    }
    let family_flag = match family {
        IpFamily::V4 => "ipv4",
        IpFamily::V6 => "ipv6",
    };
    let listed = runner.run("conntrack", &["-L", "-p", "udp", "-f", family_flag], None)?;
    let entries = parse_entries(&listed.stdout);
    let is_local = |ip: &IpAddr| local.contains(ip) || ip.is_loopback();
    let mut deleted = 0;
    for entry in frontends.stale(&entries, &is_local) {
        let o = entry.original;
        let (src, dst, sport, dport) = (
            o.src.to_string(),
            o.dst.to_string(),
            o.sport.to_string(),
            o.dport.to_string(),
        );
        let args = [
            "-D",
            "-p",
            "udp",
            "-f",
            family_flag,
            "--orig-src",
            &src,
            "--orig-dst",
            &dst,
            "--sport",
            &sport,
            "--dport",
            &dport,
        ];
        // An entry that expired meanwhile is already gone.
        if runner.run("conntrack", &args, None)?.success() {
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "udp      17 29 src=203.0.113.2 dst=198.51.100.10 sport=40000 dport=53 src=192.0.2.11 dst=203.0.113.2 sport=5353 dport=40000 [ASSURED] mark=0 use=1\n\
        udp      17 25 src=203.0.113.2 dst=198.51.100.10 sport=40001 dport=53 src=192.0.2.12 dst=203.0.113.2 sport=5353 dport=40001 mark=0 use=1\n\
        udp      17 25 src=203.0.113.2 dst=203.0.113.1 sport=40002 dport=30053 src=192.0.2.12 dst=192.0.2.1 sport=5353 dport=40002 mark=0 use=1\n\
        udp      17 25 src=203.0.113.2 dst=198.51.100.99 sport=40003 dport=53 [UNREPLIED] src=198.51.100.99 dst=203.0.113.2 sport=53 dport=40003 mark=0 use=1\n\
        conntrack v1.4.7 (conntrack-tools): 4 flow entries have been shown.\n";

    #[test]
    fn parses_both_directions() {
        let entries = parse_entries(LISTING);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].original.dport, 53);
        assert_eq!(entries[0].reply.src, "192.0.2.11".parse::<IpAddr>().expect("ip"));
        assert_eq!(entries[0].reply.sport, 5353);
    }

    #[test]
    fn entries_to_gone_endpoints_are_stale() {
        let mut frontends = UdpFrontends::default();
        let svc: IpAddr = "198.51.100.10".parse().expect("ip");
        let still: (IpAddr, u16) = ("192.0.2.11".parse().expect("ip"), 5353);
        frontends.by_address.entry((svc, 53)).or_default().insert(still);
        frontends.by_node_port.entry(30053).or_default().insert(still);
        let entries = parse_entries(LISTING);
        let node: IpAddr = "203.0.113.1".parse().expect("ip");
        let stale = frontends.stale(&entries, &|ip| *ip == node);
        let ports: Vec<u16> = stale.iter().map(|e| e.original.sport).collect();
        // 40000 still reaches a serving endpoint; 40001 and the NodePort flow
        // 40002 reach the endpoint that went away; 40003 is not to a Service.
        assert_eq!(ports, [40001, 40002]);
    }
}
