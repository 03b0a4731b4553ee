//! kube-proxy's command-line flags: each sets one configuration field, over
//! what the `--config` file says, and goes through the same validation.

use super::{
    ConfigFileError, ConntrackFile, DetectLocalFile, Invalid, IptablesFile, ProxyConfiguration, ProxyFile,
};

/// The flags accepted (without `--`), and the configuration field each sets.
pub const PROXY_FLAGS: &[(&str, &str)] = &[
    ("proxy-mode", "mode"),
    ("kubeconfig", "clientConnection.kubeconfig"),
    ("hostname-override", "hostnameOverride"),
    ("bind-address", "bindAddress"),
    ("healthz-bind-address", "healthzBindAddress"),
    ("metrics-bind-address", "metricsBindAddress"),
    ("cluster-cidr", "clusterCIDR"),
    ("detect-local-mode", "detectLocalMode"),
    ("pod-bridge-interface", "detectLocal.bridgeInterface"),
    ("pod-interface-name-prefix", "detectLocal.interfaceNamePrefix"),
    ("nodeport-addresses", "nodePortAddresses"),
    ("masquerade-all", "iptables.masqueradeAll"),
    ("iptables-masquerade-bit", "iptables.masqueradeBit"),
    ("iptables-localhost-nodeports", "iptables.localhostNodePorts"),
    ("iptables-sync-period", "iptables.syncPeriod"),
    ("iptables-min-sync-period", "iptables.minSyncPeriod"),
    ("config-sync-period", "configSyncPeriod"),
    ("conntrack-max-per-core", "conntrack.maxPerCore"),
    ("conntrack-min", "conntrack.min"),
    (
        "conntrack-tcp-timeout-established",
        "conntrack.tcpEstablishedTimeout",
    ),
    (
        "conntrack-tcp-timeout-close-wait",
        "conntrack.tcpCloseWaitTimeout",
    ),
    ("conntrack-tcp-be-liberal", "conntrack.tcpBeLiberal"),
    ("conntrack-udp-timeout", "conntrack.udpTimeout"),
    ("conntrack-udp-timeout-stream", "conntrack.udpStreamTimeout"),
    ("oom-score-adj", "oomScoreAdj"),
    ("feature-gates", "featureGates"),
];

/// Where flag errors say they come from.
const COMMAND_LINE: &str = "command line";

/// The configuration of a `--config` file (`(text, file name)`, or none) with
/// `flags` (`(name without --, value)`) applied over it. A flag's error names
/// the flag; a file's error names the file and field.
pub fn proxy_configuration_with_flags(
    file: Option<(&str, &str)>,
    flags: &[(&str, &str)],
) -> Result<ProxyConfiguration, ConfigFileError> {
    let mut settings = match file {
        Some((text, name)) => super::read_checked(text, name)?,
        None => ProxyFile::default(),
    };
    let flag_error = |flag: &str, message: String| ConfigFileError::Invalid {
        file: COMMAND_LINE.to_owned(),
        field: format!("--{flag}"),
        message,
    };
    for &(flag, value) in flags {
        set(&mut settings, flag, value).map_err(|message| flag_error(flag, message))?;
    }
    settings.validate().map_err(|(field, message): Invalid| {
        // A value a flag set is the flag's fault, whatever the file says.
        let by_flag = flags
            .iter()
            .rev()
            .find(|(flag, _)| PROXY_FLAGS.iter().any(|(f, path)| f == flag && *path == field));
        match (by_flag, file) {
            (Some((flag, _)), _) => flag_error(flag, message),
            (None, Some((_, name))) => ConfigFileError::Invalid {
                file: name.to_owned(),
                field,
                message,
            },
            (None, None) => flag_error(&field, message),
        }
    })
}

/// Applies one flag; the error is the message.
fn set(settings: &mut ProxyFile, flag: &str, value: &str) -> Result<(), String> {
    let text = || Some(value.to_owned());
    // A conntrack flag wins over both the top-level and the `linux.` section.
    let conntrack = |s: &mut ProxyFile, apply: &dyn Fn(&mut ConntrackFile)| {
        apply(s.conntrack.get_or_insert_with(Default::default));
        if let Some(linux) = s.linux.as_mut().and_then(|l| l.conntrack.as_mut()) {
            apply(linux);
        }
    };
    match flag {
        "kubeconfig" => {
            settings
                .client_connection
                .get_or_insert_with(Default::default)
                .kubeconfig = text()
        }
        "proxy-mode" => settings.mode = text(),
        "hostname-override" => settings.hostname_override = text(),
        "bind-address" => settings.bind_address = text(),
        "healthz-bind-address" => settings.healthz_bind_address = text(),
        "metrics-bind-address" => settings.metrics_bind_address = text(),
        "cluster-cidr" => {
            settings.cluster_cidr = text();
            detect(settings).cluster_cidrs = None;
        }
        "detect-local-mode" => settings.detect_local_mode = text(),
        "pod-bridge-interface" => detect(settings).bridge_interface = text(),
        "pod-interface-name-prefix" => detect(settings).interface_name_prefix = text(),
        "nodeport-addresses" => {
            settings.node_port_addresses = Some(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
        "masquerade-all" => {
            iptables(settings).masquerade_all = Some(go_bool(value)?);
            if let Some(linux) = settings.linux.as_mut() {
                linux.masquerade_all = None;
            }
        }
        "iptables-masquerade-bit" => iptables(settings).masquerade_bit = Some(integer(value)?),
        "iptables-localhost-nodeports" => iptables(settings).localhost_node_ports = Some(go_bool(value)?),
        "iptables-sync-period" => iptables(settings).sync_period = text(),
        "iptables-min-sync-period" => iptables(settings).min_sync_period = text(),
        "config-sync-period" => settings.config_sync_period = text(),
        "conntrack-max-per-core" => {
            let n = integer(value)?;
            conntrack(settings, &|c| c.max_per_core = Some(n));
        }
        "conntrack-min" => {
            let n = integer(value)?;
            conntrack(settings, &|c| c.min = Some(n));
        }
        "conntrack-tcp-timeout-established" => {
            conntrack(settings, &|c| c.tcp_established_timeout = Some(value.to_owned()));
        }
        "conntrack-tcp-timeout-close-wait" => {
            conntrack(settings, &|c| c.tcp_close_wait_timeout = Some(value.to_owned()));
        }
        "conntrack-tcp-be-liberal" => {
            let on = go_bool(value)?;
            conntrack(settings, &|c| c.tcp_be_liberal = Some(on));
        }
        "conntrack-udp-timeout" => conntrack(settings, &|c| c.udp_timeout = Some(value.to_owned())),
        "conntrack-udp-timeout-stream" => {
            conntrack(settings, &|c| c.udp_stream_timeout = Some(value.to_owned()));
        }
        "oom-score-adj" => {
            settings.oom_score_adj = Some(integer(value)?);
            if let Some(linux) = settings.linux.as_mut() {
                linux.oom_score_adj = None;
            }
        }
        "feature-gates" => {
            let gates = settings.feature_gates.get_or_insert_with(Default::default);
            for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (name, on) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("{pair:?} is not NAME=true|false"))?;
                gates.insert(name.trim().to_owned(), go_bool(on.trim())?);
            }
        }
        _ => return Err(format!("unknown flag (known: {})", known_flags())),
    }
    Ok(())
}

fn iptables(settings: &mut ProxyFile) -> &mut IptablesFile {
    settings.iptables.get_or_insert_with(Default::default)
}

fn detect(settings: &mut ProxyFile) -> &mut DetectLocalFile {
    settings.detect_local.get_or_insert_with(Default::default)
}

fn known_flags() -> String {
    PROXY_FLAGS
        .iter()
        .map(|(flag, _)| format!("--{flag}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Go's `strconv.ParseBool`, which kube-proxy's boolean flags use.
fn go_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{value:?} is not a boolean")),
    }
}

fn integer(value: &str) -> Result<i64, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not an integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                        iptables:\n  syncPeriod: 20s\n  masqueradeBit: 12\nlinux:\n  conntrack:\n    min: 5\n";

    #[test]
    fn flags_override_the_file_and_keep_the_rest() {
        let cfg = proxy_configuration_with_flags(
            Some((FILE, "proxy.yaml")),
            &[
                ("iptables-sync-period", "10s"),
                ("conntrack-min", "7"),
                ("feature-gates", "A=true,B=false"),
            ],
        )
        .expect("valid");
        assert_eq!(cfg.sync_period_ms, 10_000);
        assert_eq!(cfg.masquerade_bit, 12);
        assert_eq!(cfg.conntrack.min, Some(7));
        assert_eq!(cfg.feature_gates.get("A"), Some(&true));
        assert_eq!(cfg.feature_gates.get("B"), Some(&false));
    }

    #[test]
    fn flags_alone_start_from_the_defaults() {
        let cfg = proxy_configuration_with_flags(
            None,
            &[("masquerade-all", "true"), ("cluster-cidr", "10.0.0.0/8")],
        )
        .expect("valid");
        assert!(cfg.masquerade_all);
        assert_eq!(cfg.cluster_cidrs.len(), 1);
        assert_eq!(cfg.min_sync_period_ms, None);
        assert_eq!(
            proxy_configuration_with_flags(None, &[]).expect("valid"),
            ProxyConfiguration::default()
        );
    }

    #[test]
    fn a_bad_flag_value_names_the_flag() {
        let err =
            proxy_configuration_with_flags(Some((FILE, "proxy.yaml")), &[("iptables-min-sync-period", "1m")])
                .expect_err("min > sync");
        let text = err.to_string();
        assert!(text.contains("--iptables-min-sync-period"), "{text}");
        assert!(text.contains("command line"), "{text}");

        let err = proxy_configuration_with_flags(None, &[("masquerade-all", "yes")]).expect_err("not a bool");
        assert!(err.to_string().contains("--masquerade-all"), "{err}");
        let err = proxy_configuration_with_flags(None, &[("no-such-flag", "1")]).expect_err("unknown");
        assert!(err.to_string().contains("--no-such-flag"), "{err}");
    }

    #[test]
    fn a_bad_file_value_still_names_the_file() {
        let bad = FILE.replace("masqueradeBit: 12", "masqueradeBit: 40");
        let err =
            proxy_configuration_with_flags(Some((&bad, "proxy.yaml")), &[("iptables-sync-period", "10s")])
                .expect_err("bit out of range");
        let text = err.to_string();
        assert!(
            text.contains("proxy.yaml") && text.contains("iptables.masqueradeBit"),
            "{text}"
        );
    }

    #[test]
    fn the_proxy_mode_flag_overrides_the_file() {
        let file = format!("{FILE}mode: iptables\nnftables:\n  syncPeriod: 5s\n  masqueradeBit: 3\n");
        let cfg = proxy_configuration_with_flags(Some((&file, "proxy.yaml")), &[("proxy-mode", "nftables")])
            .expect("valid");
        assert_eq!(cfg.mode, crate::ProxyMode::Nftables);
        assert_eq!((cfg.sync_period_ms, cfg.masquerade_bit), (5_000, 3));
        let err = proxy_configuration_with_flags(Some((&file, "proxy.yaml")), &[("proxy-mode", "ipvs")])
            .expect_err("ipvs");
        let text = err.to_string();
        assert!(
            text.contains("--proxy-mode") && text.contains("\"ipvs\""),
            "{text}"
        );
    }

    #[test]
    fn every_listed_flag_is_handled() {
        for (flag, _) in PROXY_FLAGS {
            let mut settings = ProxyFile::default();
            let result = set(&mut settings, flag, "1");
            assert!(
                result
                    .as_ref()
                    .map_or_else(|e| !e.starts_with("unknown flag"), |_| true),
                "--{flag}: {result:?}"
            );
        }
    }
}
