//! kube-proxy's `--config` file (`kubeproxy.config.k8s.io/v1alpha1`
//! `KubeProxyConfiguration`, v1.33) -> [`ProxyConfiguration`], upstream's
//! defaults applied and its validation done.
//!
//! Stricter than kube-proxy in one way: an unknown field is an error (kube-proxy
//! falls back to lenient decoding for v1alpha1 and only logs), because a
//! misspelt key silently keeping a default is the worse surprise on a node.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use chainsmith_model::{IpFamily, IpNet, parse_cidr_sloppy, parse_ip_sloppy};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::config_file::{
    ConfigFileError, Invalid, check_size_and_syntax, in_file, interface_name, invalid, read_document,
};
use crate::node::parse_go_duration_ms;

/// The only `apiVersion` read.
pub const PROXY_CONFIG_API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The only `kind` read.
pub const PROXY_CONFIG_KIND: &str = "KubeProxyConfiguration";
/// kube-proxy's health check port (`ports.ProxyHealthzPort`).
pub const DEFAULT_HEALTHZ_PORT: u16 = 10256;
/// kube-proxy's metrics port (`ports.ProxyStatusPort`).
pub const DEFAULT_METRICS_PORT: u16 = 10249;

const DEFAULT_MASQUERADE_BIT: u8 = 14;
const DEFAULT_SYNC_PERIOD_MS: u64 = 30_000;
/// kube-proxy's `minSyncPeriod` when the file leaves it unset (or `0s`).
pub const KUBE_PROXY_MIN_SYNC_PERIOD_MS: u64 = 1_000;
const DEFAULT_CONFIG_SYNC_PERIOD_MS: u64 = 15 * 60_000;
const DEFAULT_OOM_SCORE_ADJ: i32 = -999;

/// `mode`: which of kube-proxy's Linux modes programs the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProxyMode {
    /// `iptables` (also `""`, kube-proxy's default on Linux).
    #[default]
    Iptables,
    /// `nftables`: table `kube-proxy` in families `ip` and `ip6`.
    Nftables,
}

impl ProxyMode {
    /// The mode as the configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Nftables => "nftables",
        }
    }
}

/// A validated kube-proxy configuration with upstream's defaults applied. The
/// `Default` is what kube-proxy runs with when the file sets nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfiguration {
    /// `mode` (`--proxy-mode`): `""`/`iptables` (default) or `nftables`. In
    /// nftables mode `masqueradeBit`, `syncPeriod` and `minSyncPeriod` come
    /// from the `nftables` section, `masqueradeAll` from either section (or
    /// `linux`), `localhostNodePorts` is not used, and an unset or empty
    /// `nodePortAddresses` means the node's primary IPs, as upstream.
    pub mode: ProxyMode,
    /// `clientConnection.kubeconfig`; `None` (default) = in-cluster config.
    pub kubeconfig: Option<String>,
    /// `hostnameOverride`, trimmed and lower-cased as kube-proxy uses it;
    /// `None` (default) = the host name.
    pub hostname_override: Option<String>,
    /// `bindAddress` (default `0.0.0.0`); its family picks the default
    /// healthz/metrics addresses.
    pub bind_address: IpAddr,
    /// `healthzBindAddress` (default `0.0.0.0:10256`, `[::]:10256` when
    /// `bindAddress` is IPv6); a bare IP gets port 10256.
    pub healthz_bind_address: SocketAddr,
    /// `metricsBindAddress` (default `127.0.0.1:10249`, `[::1]:10249` when
    /// `bindAddress` is IPv6); a bare IP gets port 10249.
    pub metrics_bind_address: SocketAddr,
    /// `clusterCIDR` (comma-separated) or `detectLocal.clusterCIDRs`: one CIDR
    /// or a dual-stack pair (default none).
    pub cluster_cidrs: Vec<IpNet>,
    /// `detectLocalMode` with its `detectLocal` argument (default `ClusterCIDR`).
    pub detect_local_mode: DetectLocalMode,
    /// `nodePortAddresses` (default: every local address).
    pub node_port_addresses: NodePortAddresses,
    /// `iptables.masqueradeAll` or `linux.masqueradeAll` (default false).
    pub masquerade_all: bool,
    /// `iptables.masqueradeBit` (default 14).
    pub masquerade_bit: u8,
    /// `iptables.localhostNodePorts` (default true).
    pub localhost_node_ports: bool,
    /// `iptables.syncPeriod` in milliseconds (default 30s; `0s` = default).
    pub sync_period_ms: u64,
    /// `iptables.minSyncPeriod` in milliseconds; `None` when unset or `0s`
    /// (kube-proxy then uses [`KUBE_PROXY_MIN_SYNC_PERIOD_MS`]; how chainsmith
    /// paces then is the node's choice, not the parser's).
    pub min_sync_period_ms: Option<u64>,
    /// `configSyncPeriod` (informer resync) in milliseconds (default 15m; `0s` = default).
    pub config_sync_period_ms: u64,
    /// `conntrack` / `linux.conntrack`: the sysctls kube-proxy sets at start.
    pub conntrack: ConntrackSettings,
    /// `oomScoreAdj` / `linux.oomScoreAdj` (default -999); `None` is never
    /// produced by the parser but lets a caller leave the score alone.
    pub oom_score_adj: Option<i32>,
    /// `featureGates` as given (default empty; names are not checked here).
    pub feature_gates: BTreeMap<String, bool>,
}

impl Default for ProxyConfiguration {
    fn default() -> Self {
        let bind_address = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        ProxyConfiguration {
            mode: ProxyMode::Iptables,
            kubeconfig: None,
            hostname_override: None,
            bind_address,
            healthz_bind_address: default_healthz(bind_address),
            metrics_bind_address: default_metrics(bind_address),
            cluster_cidrs: Vec::new(),
            detect_local_mode: DetectLocalMode::ClusterCidr,
            node_port_addresses: NodePortAddresses::All,
            masquerade_all: false,
            masquerade_bit: DEFAULT_MASQUERADE_BIT,
            localhost_node_ports: true,
            sync_period_ms: DEFAULT_SYNC_PERIOD_MS,
            min_sync_period_ms: None,
            config_sync_period_ms: DEFAULT_CONFIG_SYNC_PERIOD_MS,
            conntrack: ConntrackSettings::default(),
            oom_score_adj: Some(DEFAULT_OOM_SCORE_ADJ),
            feature_gates: BTreeMap::new(),
        }
    }
}

/// `detectLocalMode`: how pod traffic is told from other traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum DetectLocalMode {
    /// `ClusterCIDR` (also `""`, the default): sources inside the cluster CIDR of
    /// the family. Without a cluster CIDR for a family, that family has no detector.
    #[default]
    ClusterCidr,
    /// `NodeCIDR`: sources inside the Node's pod CIDR of the family.
    NodeCidr,
    /// `BridgeInterface`: traffic arriving on `detectLocal.bridgeInterface`.
    BridgeInterface(String),
    /// `InterfaceNamePrefix`: traffic arriving on interfaces whose names start
    /// with `detectLocal.interfaceNamePrefix`.
    InterfaceNamePrefix(String),
}

/// `nodePortAddresses`: which local addresses accept NodePort traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum NodePortAddresses {
    /// Empty or absent (the default): every local address.
    #[default]
    All,
    /// `[primary]`: the node's primary IP of each family.
    Primary,
    /// Local addresses inside these CIDRs (never empty).
    Cidrs(Vec<IpNet>),
}

/// The conntrack sysctls kube-proxy sets at start. `None` leaves the kernel's
/// value (the file's `0`, or a timeout kube-proxy does not default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConntrackSettings {
    /// `maxPerCore` (default 32768): `nf_conntrack_max` = this x CPUs, at least `min`.
    pub max_per_core: Option<u32>,
    /// `min` (default 131072): the floor of `nf_conntrack_max`.
    pub min: Option<u32>,
    /// `tcpEstablishedTimeout` in milliseconds (default 24h).
    pub tcp_established_timeout_ms: Option<u64>,
    /// `tcpCloseWaitTimeout` in milliseconds (default 1h).
    pub tcp_close_wait_timeout_ms: Option<u64>,
    /// `tcpBeLiberal` (default false).
    pub tcp_be_liberal: bool,
    /// `udpTimeout` in milliseconds (default: the kernel's).
    pub udp_timeout_ms: Option<u64>,
    /// `udpStreamTimeout` in milliseconds (default: the kernel's).
    pub udp_stream_timeout_ms: Option<u64>,
}

impl Default for ConntrackSettings {
    fn default() -> Self {
        ConntrackSettings {
            max_per_core: Some(32_768),
            min: Some(131_072),
            tcp_established_timeout_ms: Some(24 * 3_600_000),
            tcp_close_wait_timeout_ms: Some(3_600_000),
            tcp_be_liberal: false,
            udp_timeout_ms: None,
            udp_stream_timeout_ms: None,
        }
    }
}

fn default_healthz(bind: IpAddr) -> SocketAddr {
    let ip = match bind {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, DEFAULT_HEALTHZ_PORT)
}

fn default_metrics(bind: IpAddr) -> SocketAddr {
    let ip = match bind {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    SocketAddr::new(ip, DEFAULT_METRICS_PORT)
}

mod flags;

pub use flags::{PROXY_FLAGS, proxy_configuration_with_flags};

/// Read first, leniently, so that a file of another kind is named as such
/// rather than by its first unknown field.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    api_version: Option<String>,
    kind: Option<String>,
}

/// Mode sections chainsmith does not use, and `logging`: any mapping.
type Opaque = BTreeMap<String, IgnoredAny>;

// Every field is optional because `null` (as kubeadm writes for unset
// pointers) means the same as absent. Integers are wide, so that an
// out-of-range value is a value error quoting it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProxyFile {
    #[allow(dead_code, reason = "checked by the TypeMeta pass")]
    api_version: Option<String>,
    #[allow(dead_code, reason = "checked by the TypeMeta pass")]
    kind: Option<String>,
    feature_gates: Option<BTreeMap<String, bool>>,
    client_connection: Option<ClientConnectionFile>,
    #[allow(dead_code, reason = "logging is the binary's own")]
    logging: Option<Opaque>,
    hostname_override: Option<String>,
    bind_address: Option<String>,
    healthz_bind_address: Option<String>,
    metrics_bind_address: Option<String>,
    #[allow(dead_code, reason = "type-checked as upstream does, not used")]
    bind_address_hard_fail: Option<bool>,
    #[allow(dead_code, reason = "type-checked as upstream does, not used")]
    enable_profiling: Option<bool>,
    #[allow(dead_code, reason = "type-checked as upstream does, not used")]
    show_hidden_metrics_for_version: Option<String>,
    mode: Option<String>,
    iptables: Option<IptablesFile>,
    #[allow(dead_code, reason = "another mode's settings")]
    ipvs: Option<Opaque>,
    nftables: Option<NftablesFile>,
    #[allow(dead_code, reason = "another platform's settings")]
    winkernel: Option<Opaque>,
    #[allow(dead_code, reason = "another platform's settings")]
    windows_run_as_service: Option<bool>,
    linux: Option<LinuxFile>,
    detect_local_mode: Option<String>,
    detect_local: Option<DetectLocalFile>,
    #[serde(rename = "clusterCIDR")]
    cluster_cidr: Option<String>,
    node_port_addresses: Option<Vec<String>>,
    oom_score_adj: Option<i64>,
    conntrack: Option<ConntrackFile>,
    config_sync_period: Option<String>,
    #[allow(dead_code, reason = "the userspace proxy's; ignored since 1.26")]
    port_range: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClientConnectionFile {
    kubeconfig: Option<String>,
    #[allow(dead_code, reason = "type-checked as upstream does, not used")]
    accept_content_types: Option<String>,
    #[allow(dead_code, reason = "type-checked as upstream does, not used")]
    content_type: Option<String>,
    #[allow(dead_code, reason = "type-checked as upstream does, not used")]
    qps: Option<f64>,
    #[allow(dead_code, reason = "type-checked as upstream does, not used")]
    burst: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IptablesFile {
    masquerade_all: Option<bool>,
    masquerade_bit: Option<i64>,
    localhost_node_ports: Option<bool>,
    sync_period: Option<String>,
    min_sync_period: Option<String>,
}

/// The `nftables` section (upstream's `KubeProxyNFTablesConfiguration`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NftablesFile {
    masquerade_all: Option<bool>,
    masquerade_bit: Option<i64>,
    sync_period: Option<String>,
    min_sync_period: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LinuxFile {
    conntrack: Option<ConntrackFile>,
    masquerade_all: Option<bool>,
    oom_score_adj: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DetectLocalFile {
    bridge_interface: Option<String>,
    interface_name_prefix: Option<String>,
    #[serde(rename = "clusterCIDRs")]
    cluster_cidrs: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConntrackFile {
    max_per_core: Option<i64>,
    min: Option<i64>,
    tcp_established_timeout: Option<String>,
    tcp_close_wait_timeout: Option<String>,
    tcp_be_liberal: Option<bool>,
    udp_timeout: Option<String>,
    udp_stream_timeout: Option<String>,
}

/// Reads a kube-proxy `--config` file (YAML or JSON). `file` names the input in
/// errors. Upstream's defaults fill what the file leaves out (or sets to its
/// zero value where kube-proxy treats zero as unset); unknown fields, invalid
/// values and contradictory settings are errors naming the field.
pub fn parse_proxy_configuration(text: &str, file: &str) -> Result<ProxyConfiguration, ConfigFileError> {
    read_checked(text, file)?.validate().map_err(in_file(file))
}

/// The file's settings, checked for size, syntax, kind and field types but not
/// yet for values.
fn read_checked(text: &str, file: &str) -> Result<ProxyFile, ConfigFileError> {
    check_size_and_syntax(text, file)?;
    let meta = read_document::<TypeMeta>(text).map_err(in_file(file))?;
    check_type_meta(meta).map_err(in_file(file))?;
    let parsed = read_document::<ProxyFile>(text).map_err(in_file(file))?;
    parsed.ok_or_else(|| in_file(file)(invalid("", "empty")))
}

fn check_type_meta(meta: Option<TypeMeta>) -> Result<(), Invalid> {
    let (api_version, kind) = meta.map(|m| (m.api_version, m.kind)).unwrap_or_default();
    match api_version.as_deref() {
        Some(PROXY_CONFIG_API_VERSION) => {}
        None => {
            return Err(invalid(
                "apiVersion",
                format!("missing (expected {PROXY_CONFIG_API_VERSION})"),
            ));
        }
        Some(other) => {
            let message = format!("unsupported apiVersion {other:?} (expected {PROXY_CONFIG_API_VERSION})");
            return Err(invalid("apiVersion", message));
        }
    }
    match kind.as_deref() {
        Some(PROXY_CONFIG_KIND) => Ok(()),
        None => Err(invalid("kind", format!("missing (expected {PROXY_CONFIG_KIND})"))),
        Some(other) => Err(invalid(
            "kind",
            format!("unsupported kind {other:?} (expected {PROXY_CONFIG_KIND})"),
        )),
    }
}

impl ProxyFile {
    fn validate(self) -> Result<ProxyConfiguration, Invalid> {
        let mode = match self.mode.as_deref() {
            None | Some("" | "iptables") => ProxyMode::Iptables,
            Some("nftables") => ProxyMode::Nftables,
            Some(other) => {
                let message = format!(
                    "unsupported mode {other:?}: chainsmith implements kube-proxy's iptables and nftables modes (\"\", iptables or nftables)"
                );
                return Err(invalid("mode", message));
            }
        };
        let mut cfg = ProxyConfiguration {
            mode,
            ..ProxyConfiguration::default()
        };
        cfg.kubeconfig = self
            .client_connection
            .and_then(|c| c.kubeconfig)
            .filter(|k| !k.is_empty());
        cfg.hostname_override = hostname_override(self.hostname_override)?;

        if let Some(text) = self.bind_address.filter(|t| !t.is_empty()) {
            cfg.bind_address = ip_of("bindAddress", &text)?;
        }
        cfg.healthz_bind_address = match self.healthz_bind_address.filter(|t| !t.is_empty()) {
            Some(text) => host_port("healthzBindAddress", &text, DEFAULT_HEALTHZ_PORT)?,
            None => default_healthz(cfg.bind_address),
        };
        cfg.metrics_bind_address = match self.metrics_bind_address.filter(|t| !t.is_empty()) {
            Some(text) => host_port("metricsBindAddress", &text, DEFAULT_METRICS_PORT)?,
            None => default_metrics(cfg.bind_address),
        };

        let detect_local = self.detect_local.unwrap_or(DetectLocalFile {
            bridge_interface: None,
            interface_name_prefix: None,
            cluster_cidrs: None,
        });
        cfg.cluster_cidrs = cluster_cidrs(
            self.cluster_cidr.as_deref(),
            detect_local.cluster_cidrs.as_deref(),
        )?;
        cfg.detect_local_mode = detect_local_mode(
            self.detect_local_mode.as_deref().unwrap_or(""),
            detect_local.bridge_interface,
            detect_local.interface_name_prefix,
        )?;
        match self.node_port_addresses {
            // Upstream's default in nftables mode: the node's primary IPs.
            Some(list) if cfg.mode == ProxyMode::Nftables && list.is_empty() => {
                cfg.node_port_addresses = NodePortAddresses::Primary;
            }
            None if cfg.mode == ProxyMode::Nftables => cfg.node_port_addresses = NodePortAddresses::Primary,
            Some(list) => cfg.node_port_addresses = node_port_addresses(&list)?,
            None => {}
        }

        let iptables = self.iptables.unwrap_or(IptablesFile {
            masquerade_all: None,
            masquerade_bit: None,
            localhost_node_ports: None,
            sync_period: None,
            min_sync_period: None,
        });
        let linux = self.linux.unwrap_or(LinuxFile {
            conntrack: None,
            masquerade_all: None,
            oom_score_adj: None,
        });
        let nftables = self.nftables.unwrap_or_default();
        // Go bools cannot tell false from unset: either section turns it on.
        cfg.masquerade_all = iptables.masquerade_all.unwrap_or(false)
            || linux.masquerade_all.unwrap_or(false)
            || (cfg.mode == ProxyMode::Nftables && nftables.masquerade_all.unwrap_or(false));
        let (section, bit, sync, min) = match cfg.mode {
            ProxyMode::Iptables => (
                "iptables",
                iptables.masquerade_bit,
                iptables.sync_period.as_deref(),
                iptables.min_sync_period.as_deref(),
            ),
            ProxyMode::Nftables => (
                "nftables",
                nftables.masquerade_bit,
                nftables.sync_period.as_deref(),
                nftables.min_sync_period.as_deref(),
            ),
        };
        if let Some(bit) = bit {
            cfg.masquerade_bit = match u8::try_from(bit) {
                Ok(bit) if bit <= 31 => bit,
                _ => {
                    return Err(invalid(
                        format!("{section}.masqueradeBit"),
                        format!("{bit} is not in 0..=31"),
                    ));
                }
            };
        }
        cfg.localhost_node_ports = iptables.localhost_node_ports.unwrap_or(true);
        sync_periods(&mut cfg, section, sync, min)?;
        if let Some(ms) = optional_duration("configSyncPeriod", self.config_sync_period.as_deref())? {
            cfg.config_sync_period_ms = ms;
        }

        let oom = either(
            "oomScoreAdj",
            oom_score_adj("oomScoreAdj", self.oom_score_adj)?,
            oom_score_adj("linux.oomScoreAdj", linux.oom_score_adj)?,
        )?;
        if let Some(oom) = oom {
            cfg.oom_score_adj = Some(oom);
        }
        let top = Conntrack::read("conntrack", self.conntrack)?;
        let platform = Conntrack::read("linux.conntrack", linux.conntrack)?;
        cfg.conntrack = top.merge(platform)?.settings();
        cfg.feature_gates = self.feature_gates.unwrap_or_default();
        Ok(cfg)
    }
}

/// `GetHostname`: trimmed and lower-cased; only-whitespace is refused.
fn hostname_override(text: Option<String>) -> Result<Option<String>, Invalid> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let name = text.trim();
    if name.is_empty() {
        return Err(invalid(
            "hostnameOverride",
            format!("{text:?} is empty once trimmed"),
        ));
    }
    Ok(Some(name.to_lowercase()))
}

/// `syncPeriod` and `minSyncPeriod`, zero meaning the default, and min <= sync.
fn sync_periods(
    cfg: &mut ProxyConfiguration,
    section: &str,
    sync: Option<&str>,
    min: Option<&str>,
) -> Result<(), Invalid> {
    let sync = optional_duration(&format!("{section}.syncPeriod"), sync)?;
    let min = optional_duration(&format!("{section}.minSyncPeriod"), min)?;
    cfg.sync_period_ms = sync.unwrap_or(DEFAULT_SYNC_PERIOD_MS);
    cfg.min_sync_period_ms = min;
    let effective_min = min.unwrap_or(KUBE_PROXY_MIN_SYNC_PERIOD_MS);
    if effective_min > cfg.sync_period_ms {
        // Name the key the user set; a short syncPeriod can clash with the default minimum.
        let field = if min.is_some() {
            format!("{section}.minSyncPeriod")
        } else {
            format!("{section}.syncPeriod")
        };
        let message = format!(
            "minSyncPeriod {} is longer than syncPeriod {}",
            show_ms(effective_min),
            show_ms(cfg.sync_period_ms)
        );
        return Err(invalid(field, message));
    }
    Ok(())
}

/// A duration where zero (or absence) means "the default": `None` then.
fn optional_duration(field: &str, text: Option<&str>) -> Result<Option<u64>, Invalid> {
    match text {
        None => Ok(None),
        Some(text) => Ok(Some(duration(field, text)?).filter(|&ms| ms != 0)),
    }
}

/// A non-negative Go duration in milliseconds. A non-zero value below 1ms is
/// refused rather than read as zero, which would mean "default" or "leave it".
fn duration(field: &str, text: &str) -> Result<u64, Invalid> {
    match parse_go_duration_ms(text) {
        Some(0) if text.bytes().any(|b| matches!(b, b'1'..=b'9')) => {
            Err(invalid(field, format!("{text:?} is shorter than 1ms")))
        }
        Some(ms) => Ok(ms),
        None => Err(invalid(
            field,
            format!("invalid duration {text:?} (a non-negative Go duration such as 30s, 1m or 1h30m)"),
        )),
    }
}

/// Milliseconds in Go's duration spelling, shortened (`1h30m`, `1500ms`).
fn show_ms(ms: u64) -> String {
    if ms == 0 || !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    [(secs / 3600, "h"), (secs / 60 % 60, "m"), (secs % 60, "s")]
        .into_iter()
        .filter(|&(n, _)| n != 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

fn ip_of(field: &str, text: &str) -> Result<IpAddr, Invalid> {
    parse_ip_sloppy(text).ok_or_else(|| invalid(field, format!("invalid IP address {text:?}")))
}

fn cidr_of(field: &str, text: &str) -> Result<IpNet, Invalid> {
    parse_cidr_sloppy(text).ok_or_else(|| invalid(field, format!("invalid CIDR {text:?}")))
}

/// `IP:port` or `[IPv6]:port` (Go's `SplitHostPort`), or a bare IP that gets
/// `default_port` (upstream's `AppendPortIfNeeded`).
fn host_port(field: &str, text: &str, default_port: u16) -> Result<SocketAddr, Invalid> {
    if let Some(ip) = parse_ip_sloppy(text) {
        return Ok(SocketAddr::new(ip, default_port));
    }
    let bad = || {
        invalid(
            field,
            format!("invalid address {text:?} (IP:port, [IPv6]:port or an IP)"),
        )
    };
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => rest.split_once("]:").ok_or_else(bad)?,
        None => text
            .rsplit_once(':')
            .filter(|(host, _)| !host.contains(':'))
            .ok_or_else(bad)?,
    };
    let ip = parse_ip_sloppy(host).ok_or_else(bad)?;
    let port = Some(port)
        .filter(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|&p| p != 0)
        .ok_or_else(bad)?;
    Ok(SocketAddr::new(ip, port))
}

/// `clusterCIDR` (comma-separated) and `detectLocal.clusterCIDRs`: either, or
/// both listing the same CIDRs; one CIDR or a dual-stack pair.
fn cluster_cidrs(joined: Option<&str>, list: Option<&[String]>) -> Result<Vec<IpNet>, Invalid> {
    let from_joined = match joined.filter(|t| !t.is_empty()) {
        Some(text) => text
            .split(',')
            .map(|part| cidr_of("clusterCIDR", part))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let from_list = list
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, text)| cidr_of(&format!("detectLocal.clusterCIDRs[{i}]"), text))
        .collect::<Result<Vec<_>, _>>()?;
    let (field, cidrs) = match (from_joined.is_empty(), from_list.is_empty()) {
        (_, true) => ("clusterCIDR", from_joined),
        (true, false) => ("detectLocal.clusterCIDRs", from_list),
        (false, false) if from_joined == from_list => ("detectLocal.clusterCIDRs", from_list),
        (false, false) => {
            return Err(invalid(
                "detectLocal.clusterCIDRs",
                "contradicts clusterCIDR (give one of them)",
            ));
        }
    };
    let dual_stack = match cidrs.as_slice() {
        [] | [_] => true,
        [a, b] => IpFamily::of_net(a) != IpFamily::of_net(b),
        _ => false,
    };
    if !dual_stack {
        let shown: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
        let message = format!(
            "{:?} is neither one CIDR nor a dual-stack pair (one IPv4, one IPv6)",
            shown.join(",")
        );
        return Err(invalid(field, message));
    }
    Ok(cidrs)
}

fn detect_local_mode(
    mode: &str,
    bridge: Option<String>,
    prefix: Option<String>,
) -> Result<DetectLocalMode, Invalid> {
    Ok(match mode {
        "" | "ClusterCIDR" => DetectLocalMode::ClusterCidr,
        "NodeCIDR" => DetectLocalMode::NodeCidr,
        "BridgeInterface" => DetectLocalMode::BridgeInterface(interface_name(
            "detectLocal.bridgeInterface",
            bridge.as_deref(),
            &format!("detectLocalMode {mode}"),
        )?),
        "InterfaceNamePrefix" => DetectLocalMode::InterfaceNamePrefix(interface_name(
            "detectLocal.interfaceNamePrefix",
            prefix.as_deref(),
            &format!("detectLocalMode {mode}"),
        )?),
        _ => {
            let message = format!(
                "invalid mode {mode:?} (ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix)"
            );
            return Err(invalid("detectLocalMode", message));
        }
    })
}

/// CIDRs, or the single special value `primary`.
fn node_port_addresses(list: &[String]) -> Result<NodePortAddresses, Invalid> {
    if let Some(i) = list.iter().position(|entry| entry == "primary") {
        if list.len() != 1 {
            return Err(invalid(
                format!("nodePortAddresses[{i}]"),
                "\"primary\" cannot be combined with CIDRs",
            ));
        }
        return Ok(NodePortAddresses::Primary);
    }
    if list.is_empty() {
        return Ok(NodePortAddresses::All);
    }
    let cidrs = list
        .iter()
        .enumerate()
        .map(|(i, text)| cidr_of(&format!("nodePortAddresses[{i}]"), text))
        .collect::<Result<_, _>>()?;
    Ok(NodePortAddresses::Cidrs(cidrs))
}

fn oom_score_adj(field: &str, value: Option<i64>) -> Result<Option<i32>, Invalid> {
    value
        .map(|v| {
            i32::try_from(v)
                .ok()
                .filter(|v| (-1000..=1000).contains(v))
                .ok_or_else(|| invalid(field, format!("{v} is not in -1000..=1000")))
        })
        .transpose()
}

/// A setting of the top-level section and its v1.33 `linux.` twin: the one that
/// is set, or both when they agree (`None` = set in neither).
fn either<T: PartialEq>(field: &str, top: Option<T>, linux: Option<T>) -> Result<Option<T>, Invalid> {
    match (top, linux) {
        (Some(top), Some(linux)) if top != linux => Err(invalid(
            format!("linux.{field}"),
            format!("contradicts {field} (give one of them)"),
        )),
        (top, linux) => Ok(linux.or(top)),
    }
}

/// One conntrack section, parsed; `None` = not set (null, or Go's zero value
/// where the field is not a pointer).
#[derive(Default)]
struct Conntrack {
    max_per_core: Option<u32>,
    min: Option<u32>,
    tcp_established: Option<u64>,
    tcp_close_wait: Option<u64>,
    tcp_be_liberal: Option<bool>,
    udp: Option<u64>,
    udp_stream: Option<u64>,
}

impl Conntrack {
    fn read(section: &str, file: Option<ConntrackFile>) -> Result<Conntrack, Invalid> {
        let Some(file) = file else {
            return Ok(Conntrack::default());
        };
        let count = |key: &str, value: Option<i64>| -> Result<Option<u32>, Invalid> {
            value
                .map(|v| {
                    // int32 in Go.
                    u32::try_from(v)
                        .ok()
                        .filter(|&v| i32::try_from(v).is_ok())
                        .ok_or_else(|| {
                            invalid(
                                format!("{section}.{key}"),
                                format!("{v} is not in 0..={}", i32::MAX),
                            )
                        })
                })
                .transpose()
        };
        let timeout = |key: &str, text: Option<&str>| -> Result<Option<u64>, Invalid> {
            text.map(|t| duration(&format!("{section}.{key}"), t)).transpose()
        };
        Ok(Conntrack {
            max_per_core: count("maxPerCore", file.max_per_core)?,
            min: count("min", file.min)?,
            tcp_established: timeout("tcpEstablishedTimeout", file.tcp_established_timeout.as_deref())?,
            tcp_close_wait: timeout("tcpCloseWaitTimeout", file.tcp_close_wait_timeout.as_deref())?,
            tcp_be_liberal: file.tcp_be_liberal.filter(|&on| on),
            udp: timeout("udpTimeout", file.udp_timeout.as_deref())?.filter(|&ms| ms != 0),
            udp_stream: timeout("udpStreamTimeout", file.udp_stream_timeout.as_deref())?
                .filter(|&ms| ms != 0),
        })
    }

    fn merge(self, linux: Conntrack) -> Result<Conntrack, Invalid> {
        Ok(Conntrack {
            max_per_core: either("conntrack.maxPerCore", self.max_per_core, linux.max_per_core)?,
            min: either("conntrack.min", self.min, linux.min)?,
            tcp_established: either(
                "conntrack.tcpEstablishedTimeout",
                self.tcp_established,
                linux.tcp_established,
            )?,
            tcp_close_wait: either(
                "conntrack.tcpCloseWaitTimeout",
                self.tcp_close_wait,
                linux.tcp_close_wait,
            )?,
            tcp_be_liberal: either(
                "conntrack.tcpBeLiberal",
                self.tcp_be_liberal,
                linux.tcp_be_liberal,
            )?,
            udp: either("conntrack.udpTimeout", self.udp, linux.udp)?,
            udp_stream: either("conntrack.udpStreamTimeout", self.udp_stream, linux.udp_stream)?,
        })
    }

    /// Upstream's defaults for what is unset; an explicit 0 leaves the kernel's value.
    fn settings(self) -> ConntrackSettings {
        let defaults = ConntrackSettings::default();
        let or_default = |value: Option<u64>, default: Option<u64>| match value {
            Some(0) => None,
            Some(v) => Some(v),
            None => default,
        };
        ConntrackSettings {
            max_per_core: match self.max_per_core {
                Some(0) => None,
                Some(v) => Some(v),
                None => defaults.max_per_core,
            },
            min: match self.min {
                Some(0) => None,
                Some(v) => Some(v),
                None => defaults.min,
            },
            tcp_established_timeout_ms: or_default(self.tcp_established, defaults.tcp_established_timeout_ms),
            tcp_close_wait_timeout_ms: or_default(self.tcp_close_wait, defaults.tcp_close_wait_timeout_ms),
            tcp_be_liberal: self.tcp_be_liberal.unwrap_or(false),
            udp_timeout_ms: self.udp,
            udp_stream_timeout_ms: self.udp_stream,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

    /// What `kubeadm init` writes (v1.33), with a cluster CIDR.
    const KUBEADM: &str = "\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: \"\"
  burst: 0
  contentType: \"\"
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: \"\"
  interfaceNamePrefix: \"\"
detectLocalMode: \"\"
enableProfiling: false
featureGates: {}
healthzBindAddress: \"\"
hostnameOverride: \"\"
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: \"\"
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: \"0\"
    text:
      infoBufferSize: \"0\"
  verbosity: 0
metricsBindAddress: \"\"
mode: \"\"
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: \"\"
showHiddenMetricsForVersion: \"\"
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: \"\"
  rootHnsEndpointName: \"\"
  sourceVip: \"\"
";

    fn parse(body: &str) -> ProxyConfiguration {
        parse_proxy_configuration(&format!("{HEAD}{body}"), "proxy.yaml").unwrap()
    }

    fn error(text: &str) -> String {
        parse_proxy_configuration(text, "proxy.yaml")
            .unwrap_err()
            .to_string()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn kubeadm_config_reads_as_the_defaults() {
        let cfg = parse_proxy_configuration(KUBEADM, "kube-proxy.yaml").unwrap();
        assert_eq!(
            cfg,
            ProxyConfiguration {
                kubeconfig: Some("/var/lib/kube-proxy/kubeconfig.conf".to_owned()),
                cluster_cidrs: nets(&["10.244.0.0/16"]),
                ..ProxyConfiguration::default()
            }
        );
    }

    #[test]
    fn defaults_are_upstreams() {
        let cfg = parse("");
        assert_eq!(cfg, ProxyConfiguration::default());
        assert_eq!(cfg.bind_address.to_string(), "0.0.0.0");
        assert_eq!(cfg.healthz_bind_address.to_string(), "0.0.0.0:10256");
        assert_eq!(cfg.metrics_bind_address.to_string(), "127.0.0.1:10249");
        assert_eq!(cfg.detect_local_mode, DetectLocalMode::ClusterCidr);
        assert_eq!(cfg.node_port_addresses, NodePortAddresses::All);
        assert_eq!(
            (cfg.masquerade_bit, cfg.masquerade_all, cfg.localhost_node_ports),
            (14, false, true)
        );
        assert_eq!(
            (
                cfg.sync_period_ms,
                cfg.min_sync_period_ms,
                cfg.config_sync_period_ms
            ),
            (30_000, None, 900_000)
        );
        assert_eq!(cfg.oom_score_adj, Some(-999));
        let ct = cfg.conntrack;
        assert_eq!((ct.max_per_core, ct.min), (Some(32_768), Some(131_072)));
        assert_eq!(
            (ct.tcp_established_timeout_ms, ct.tcp_close_wait_timeout_ms),
            (Some(86_400_000), Some(3_600_000))
        );
        assert_eq!(
            (ct.tcp_be_liberal, ct.udp_timeout_ms, ct.udp_stream_timeout_ms),
            (false, None, None)
        );
        // JSON is YAML too.
        let json = r#"{"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration"}"#;
        assert_eq!(parse_proxy_configuration(json, "p.json").unwrap(), cfg);
    }

    #[test]
    fn settings_translate() {
        let cfg = parse(
            "\
hostnameOverride: ' Worker-1 '
bindAddress: '::'
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
detectLocalMode: InterfaceNamePrefix
detectLocal: {interfaceNamePrefix: veth}
nodePortAddresses: [primary]
featureGates: {LoadBalancerIPMode: true, Bogus: false}
oomScoreAdj: 0
iptables: {masqueradeAll: true, masqueradeBit: 0, localhostNodePorts: false, syncPeriod: 1m, minSyncPeriod: 1.5s}
configSyncPeriod: 1h
conntrack: {maxPerCore: 0, min: 5, tcpEstablishedTimeout: 0s, udpTimeout: 30s, tcpBeLiberal: true}
linux: {conntrack: {min: 5, udpStreamTimeout: 2m}}
",
        );
        assert_eq!(cfg.hostname_override.as_deref(), Some("worker-1"));
        // An IPv6 bind address moves the default healthz and metrics addresses.
        assert_eq!(cfg.healthz_bind_address.to_string(), "[::]:10256");
        assert_eq!(cfg.metrics_bind_address.to_string(), "[::1]:10249");
        assert_eq!(cfg.cluster_cidrs, nets(&["10.244.0.0/16", "fd00:10:244::/56"]));
        assert_eq!(
            cfg.detect_local_mode,
            DetectLocalMode::InterfaceNamePrefix("veth".to_owned())
        );
        assert_eq!(cfg.node_port_addresses, NodePortAddresses::Primary);
        assert_eq!(cfg.feature_gates.len(), 2);
        assert_eq!(cfg.oom_score_adj, Some(0));
        assert!(cfg.masquerade_all && !cfg.localhost_node_ports);
        assert_eq!(cfg.masquerade_bit, 0);
        assert_eq!(
            (cfg.sync_period_ms, cfg.min_sync_period_ms),
            (60_000, Some(1_500))
        );
        assert_eq!(cfg.config_sync_period_ms, 3_600_000);
        assert_eq!(
            cfg.conntrack,
            ConntrackSettings {
                max_per_core: None,
                min: Some(5),
                tcp_established_timeout_ms: None,
                tcp_close_wait_timeout_ms: Some(3_600_000),
                tcp_be_liberal: true,
                udp_timeout_ms: Some(30_000),
                udp_stream_timeout_ms: Some(120_000),
            }
        );

        let cases = [
            ("healthzBindAddress: 0.0.0.0\n", "0.0.0.0:10256"),
            ("healthzBindAddress: '::'\n", "[::]:10256"),
            ("healthzBindAddress: 10.0.0.1:8080\n", "10.0.0.1:8080"),
            ("healthzBindAddress: '[fd00::1]:8080'\n", "[fd00::1]:8080"),
        ];
        for (body, expected) in cases {
            assert_eq!(parse(body).healthz_bind_address.to_string(), expected, "{body}");
        }
        assert_eq!(
            parse("metricsBindAddress: 0.0.0.0\n")
                .metrics_bind_address
                .to_string(),
            "0.0.0.0:10249"
        );
        assert_eq!(
            parse("detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: cbr0}\n")
                .detect_local_mode,
            DetectLocalMode::BridgeInterface("cbr0".to_owned())
        );
        assert_eq!(
            parse("detectLocal: {clusterCIDRs: ['fd00::/48']}\nclusterCIDR: 'fd00::/48'\n").cluster_cidrs,
            nets(&["fd00::/48"])
        );
        assert_eq!(
            parse("nodePortAddresses: [10.0.0.0/8, 'fd00::/64']\n").node_port_addresses,
            NodePortAddresses::Cidrs(nets(&["10.0.0.0/8", "fd00::/64"]))
        );
        assert_eq!(
            parse("mode: iptables\nnodePortAddresses: []\n"),
            ProxyConfiguration::default()
        );
    }

    #[test]
    fn nftables_mode_reads_its_own_section() {
        let cfg = parse(
            "mode: nftables\niptables: {syncPeriod: 10s, masqueradeBit: 2}\n\
             nftables: {syncPeriod: 4s, minSyncPeriod: 200ms, masqueradeBit: 5, masqueradeAll: true}\n",
        );
        assert_eq!(cfg.mode, ProxyMode::Nftables);
        assert_eq!(cfg.sync_period_ms, 4_000);
        assert_eq!(cfg.min_sync_period_ms, Some(200));
        assert_eq!(cfg.masquerade_bit, 5);
        assert!(cfg.masquerade_all);
        // Upstream's nftables-mode default: the primary node IPs.
        assert_eq!(cfg.node_port_addresses, NodePortAddresses::Primary);
        assert_eq!(
            parse("mode: nftables\nnodePortAddresses: [10.0.0.0/8]\n").node_port_addresses,
            NodePortAddresses::Cidrs(nets(&["10.0.0.0/8"]))
        );
        // The other mode's section is type-checked and left alone.
        let iptables = parse("mode: iptables\nnftables: {syncPeriod: 4s, masqueradeAll: true}\n");
        assert_eq!(iptables, ProxyConfiguration::default());
    }

    #[test]
    fn invalid_configs_are_errors_naming_the_field() {
        let cases = [
            ("bogus: 1\n", "proxy.yaml: bogus: unknown field `bogus`"),
            (
                "iptables: {syncPeriod: 1m, bogus: 1}\n",
                "proxy.yaml: iptables.bogus: unknown field `bogus`",
            ),
            (
                "linux: {conntrack: {max: 1}}\n",
                "proxy.yaml: linux.conntrack.max: unknown field `max`",
            ),
            (
                "mode: ipvs\n",
                "proxy.yaml: mode: unsupported mode \"ipvs\": chainsmith implements kube-proxy's iptables and nftables modes",
            ),
            (
                "mode: kernelspace\n",
                "proxy.yaml: mode: unsupported mode \"kernelspace\"",
            ),
            (
                "mode: nftables\nnftables: {syncPeriod: 1m, localhostNodePorts: true}\n",
                "proxy.yaml: nftables.localhostNodePorts: unknown field `localhostNodePorts`",
            ),
            (
                "mode: nftables\nnftables: {masqueradeBit: 32}\n",
                "proxy.yaml: nftables.masqueradeBit: 32 is not in 0..=31",
            ),
            (
                "mode: nftables\nnftables: {syncPeriod: 500ms}\n",
                "proxy.yaml: nftables.syncPeriod: minSyncPeriod 1s is longer than syncPeriod 500ms",
            ),
            (
                "iptables: {syncPeriod: 30}\n",
                "proxy.yaml: iptables.syncPeriod: invalid duration \"30\" (a non-negative Go duration",
            ),
            (
                "configSyncPeriod: -1s\n",
                "proxy.yaml: configSyncPeriod: invalid duration \"-1s\"",
            ),
            (
                "iptables: {syncPeriod: 500us}\n",
                "proxy.yaml: iptables.syncPeriod: \"500us\" is shorter than 1ms",
            ),
            (
                "conntrack: {udpTimeout: 1d}\n",
                "proxy.yaml: conntrack.udpTimeout: invalid duration \"1d\"",
            ),
            (
                "clusterCIDR: 10.244.0.0/16,fd00::/129\n",
                "proxy.yaml: clusterCIDR: invalid CIDR \"fd00::/129\"",
            ),
            (
                "detectLocal: {clusterCIDRs: [10.0.0.0/8, x]}\n",
                "proxy.yaml: detectLocal.clusterCIDRs[1]: invalid CIDR \"x\"",
            ),
            (
                "clusterCIDR: 10.0.0.0/8,10.1.0.0/16\n",
                "proxy.yaml: clusterCIDR: \"10.0.0.0/8,10.1.0.0/16\" is neither one CIDR nor a dual-stack pair",
            ),
            (
                "clusterCIDR: 10.0.0.0/8\ndetectLocal: {clusterCIDRs: [10.1.0.0/16]}\n",
                "proxy.yaml: detectLocal.clusterCIDRs: contradicts clusterCIDR",
            ),
            (
                "iptables: {masqueradeBit: 40}\n",
                "proxy.yaml: iptables.masqueradeBit: 40 is not in 0..=31",
            ),
            (
                "iptables: {masqueradeBit: -1}\n",
                "proxy.yaml: iptables.masqueradeBit: -1 is not in 0..=31",
            ),
            (
                "detectLocalMode: BridgeInterface\n",
                "proxy.yaml: detectLocal.bridgeInterface: required by detectLocalMode BridgeInterface",
            ),
            (
                "detectLocalMode: InterfaceNamePrefix\ndetectLocal: {interfaceNamePrefix: ''}\n",
                "proxy.yaml: detectLocal.interfaceNamePrefix: required by detectLocalMode InterfaceNamePrefix",
            ),
            (
                "detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: 'br 0'}\n",
                "proxy.yaml: detectLocal.bridgeInterface: invalid interface name \"br 0\"",
            ),
            (
                "detectLocalMode: Magic\n",
                "proxy.yaml: detectLocalMode: invalid mode \"Magic\"",
            ),
            (
                "iptables: {minSyncPeriod: 5m}\n",
                "proxy.yaml: iptables.minSyncPeriod: minSyncPeriod 5m is longer than syncPeriod 30s",
            ),
            (
                "iptables: {syncPeriod: 500ms}\n",
                "proxy.yaml: iptables.syncPeriod: minSyncPeriod 1s is longer than syncPeriod 500ms",
            ),
            (
                "bindAddress: 1.2.3\n",
                "proxy.yaml: bindAddress: invalid IP address \"1.2.3\"",
            ),
            (
                "healthzBindAddress: 'localhost:10256'\n",
                "proxy.yaml: healthzBindAddress: invalid address \"localhost:10256\"",
            ),
            (
                "metricsBindAddress: '1.2.3.4:0'\n",
                "proxy.yaml: metricsBindAddress: invalid address \"1.2.3.4:0\"",
            ),
            (
                "nodePortAddresses: [10.0.0.0/8, primary]\n",
                "proxy.yaml: nodePortAddresses[1]: \"primary\" cannot be combined with CIDRs",
            ),
            (
                "nodePortAddresses: [10.0.0.0/33]\n",
                "proxy.yaml: nodePortAddresses[0]: invalid CIDR \"10.0.0.0/33\"",
            ),
            (
                "oomScoreAdj: -1001\n",
                "proxy.yaml: oomScoreAdj: -1001 is not in -1000..=1000",
            ),
            (
                "conntrack: {maxPerCore: -1}\n",
                "proxy.yaml: conntrack.maxPerCore: -1 is not in 0..=2147483647",
            ),
            (
                "conntrack: {min: 1}\nlinux: {conntrack: {min: 2}}\n",
                "proxy.yaml: linux.conntrack.min: contradicts conntrack.min",
            ),
            (
                "oomScoreAdj: 1\nlinux: {oomScoreAdj: 2}\n",
                "proxy.yaml: linux.oomScoreAdj: contradicts oomScoreAdj",
            ),
            (
                "hostnameOverride: '  '\n",
                "proxy.yaml: hostnameOverride: \"  \" is empty once trimmed",
            ),
            (
                "iptables: {masqueradeAll: yes}\n",
                "proxy.yaml: iptables.masqueradeAll: invalid boolean",
            ),
            ("ipvs: 3\n", "proxy.yaml: ipvs: "),
        ];
        for (body, expected) in cases {
            let err = error(&format!("{HEAD}{body}"));
            assert!(err.starts_with(expected), "{body:?}: {err}");
        }

        let cases = [
            (
                "",
                "proxy.yaml: apiVersion: missing (expected kubeproxy.config.k8s.io/v1alpha1)",
            ),
            (
                "apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n",
                "proxy.yaml: apiVersion: unsupported apiVersion \"kubeproxy.config.k8s.io/v1alpha2\" (expected kubeproxy.config.k8s.io/v1alpha1)",
            ),
            // Another kind is named as such, not by its first unknown field.
            (
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\nstaticPodPath: /x\n",
                "proxy.yaml: kind: unsupported kind \"KubeletConfiguration\" (expected KubeProxyConfiguration)",
            ),
            (
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n",
                "proxy.yaml: kind: missing (expected KubeProxyConfiguration)",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error(text), expected, "{text:?}");
        }
        assert!(error("- a\n").starts_with("proxy.yaml: "));
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        assert_eq!(
            error(&format!("{HEAD}mode: a\n  b: c\n")),
            "proxy.yaml:4:4: mapping values are not allowed in this context"
        );
        assert_eq!(
            error(&format!("{HEAD}---\n{HEAD}")),
            "proxy.yaml:4:1: more than one YAML document"
        );
    }

    #[test]
    fn durations_print_as_go_spells_them() {
        for (ms, text) in [
            (0, "0ms"),
            (1_500, "1500ms"),
            (30_000, "30s"),
            (5_400_000, "1h30m"),
            (3_661_000, "1h1m1s"),
        ] {
            assert_eq!(show_ms(ms), text);
        }
    }
}
