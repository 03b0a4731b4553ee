//! What iptables provides before any rule is written: the built-in chains of
//! each table, and the targets that are not chains.

/// The built-in chains of a table (none for a table iptables does not have).
pub fn builtin_chains(table: &str) -> &'static [&'static str] {
    match table {
        "filter" | "security" => &["INPUT", "FORWARD", "OUTPUT"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        _ => &[],
    }
}

/// Whether `chain` is a built-in chain of `table`: it always exists, has a
/// policy, and cannot be deleted.
pub fn is_builtin_chain(table: &str, chain: &str) -> bool {
    builtin_chains(table).contains(&chain)
}

/// The verdicts and the extension targets of iptables: `-j NAME` with one of
/// these never names a chain.
const TARGETS: &[&str] = &[
    "ACCEPT",
    "AUDIT",
    "CHECKSUM",
    "CLASSIFY",
    "CLUSTERIP",
    "CONNMARK",
    "CONNSECMARK",
    "CT",
    "DNAT",
    "DROP",
    "DSCP",
    "ECN",
    "HL",
    "HMARK",
    "IDLETIMER",
    "LED",
    "LOG",
    "MARK",
    "MASQUERADE",
    "NETMAP",
    "NFLOG",
    "NFQUEUE",
    "NOTRACK",
    "QUEUE",
    "RATEEST",
    "REDIRECT",
    "REJECT",
    "RETURN",
    "SECMARK",
    "SET",
    "SNAT",
    "SYNPROXY",
    "TCPMSS",
    "TCPOPTSTRIP",
    "TEE",
    "TOS",
    "TPROXY",
    "TRACE",
    "TTL",
    "ULOG",
];

/// Whether `name` is a verdict or a target iptables provides, not a chain.
pub fn is_builtin_target(name: &str) -> bool {
    TARGETS.contains(&name)
}
