//! The monitoring manifests in `deploy/monitoring`, checked against what the
//! binary exports and against the real `promtool`.
//!
//! - The PodMonitor selects the DaemonSet's pods on their `metrics` port in
//!   every deployment (`kubectl kustomize` of deploy/base and each overlay),
//!   the configuration shipped binds metrics where it scrapes, and the job it
//!   gives is the one the alerts select.
//! - The PrometheusRule's groups pass `promtool check rules`, and its unit tests
//!   (`alerts.test.yaml`, a case where each alert fires and one where it does
//!   not) pass `promtool test rules`. Every alert has a severity, a summary, a
//!   description and a runbook section.
//! - Every metric and label that an alert or a dashboard query names is one
//!   `chainsmith_node::metrics::Metrics` registers (or one Prometheus adds to a
//!   scraped target), and every dashboard query is valid PromQL for `promtool`.
//!   The dashboard's first row, and its variables, use only kube-proxy's names.
//!
//! promtool comes with Debian's `prometheus` package; `PROMTOOL` may name
//! another binary. Without it, or without kubectl, these tests fail rather
//! than skip.

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use chainsmith_model::IpFamily;
use chainsmith_node::metrics::{FinishedSync, Metrics};
use chainsmith_sync::{RuleCounts, SyncKind};
use prometheus::proto::MetricType;
use serde_json::{Value, json};

/// Labels the Prometheus Operator gives every target of a PodMonitor.
const OPERATOR_TARGET_LABELS: &[&str] = &["job", "instance", "namespace", "pod", "container", "endpoint"];
/// Series Prometheus writes itself for every target.
const SCRAPE_SERIES: &[&str] = &["up"];
/// The dashboard row whose panels may use chainsmith's own metrics.
const CHAINSMITH_ROW: &str = "chainsmith only";

fn monitoring_dir() -> PathBuf {
    workspace_root().join("deploy/monitoring")
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(name: &str) -> String {
    let path = monitoring_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(name: &str) -> Value {
    serde_saphyr::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("grafana-dashboard.json")).expect("grafana-dashboard.json")
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer}"))
}

fn array_at<'a>(value: &'a Value, pointer: &str) -> &'a [Value] {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("no list at {pointer}"))
}

// ---------------------------------------------------------------------------
// promtool

fn promtool(dir: &Path, args: &[&str]) {
    let program = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_string());
    let output = Command::new(&program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}`: {e}. These tests need promtool: `apt-get install prometheus` \
                 (Debian) or set PROMTOOL to its path"
            )
        });
    assert!(
        output.status.success(),
        "`promtool {}` failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A PrometheusRule's groups as the plain rules file promtool reads (JSON is
/// YAML).
fn write_rule_groups(dir: &Path, file: &str, spec: &Value) {
    let text = serde_json::to_string_pretty(spec).expect("json");
    std::fs::write(dir.join(file), text).expect("write rules");
}

// ---------------------------------------------------------------------------
// What a scrape of chainsmith stores

/// Every series name Prometheus stores for a chainsmith target, with the
/// label names it carries.
struct Catalog {
    series: BTreeMap<String, BTreeSet<String>>,
}

/// Calls every recording method: a labelled metric has no series, and is
/// missing from `gather()`, until a label value is first used.
fn exercise(metrics: &Metrics) {
    for family in [IpFamily::V4, IpFamily::V6] {
        for (kind, applied) in [(SyncKind::Full, true), (SyncKind::Partial, false)] {
            let sync = FinishedSync {
                kind,
                seconds: 0.01,
                counts: RuleCounts::default(),
                payload_bytes: 1000,
                applied,
                now_unix: 1.0e9,
            };
            metrics.sync_done(family, &sync);
        }
        metrics.queued(family, 1.0e9);
        metrics.network_programming(family, 1.0);
        metrics.drift_detected(family);
        metrics.conntrack_deleted(family, 1);
    }
    metrics.change(true, 1);
    metrics.change(false, 1);
    metrics.watch_error("services");
    metrics.nfacct(Some(1), Some(1));
    metrics.health_answer(false, 200);
    metrics.health_answer(true, 200);
}

impl Catalog {
    /// The binary's own metrics, plus the labels the PodMonitor's targets add.
    fn new(pod_monitor: &Value) -> Catalog {
        let mut target: BTreeSet<String> = OPERATOR_TARGET_LABELS.iter().map(|l| l.to_string()).collect();
        for endpoint in array_at(pod_monitor, "/spec/podMetricsEndpoints") {
            for relabeling in endpoint["relabelings"].as_array().into_iter().flatten() {
                if let Some(label) = relabeling["targetLabel"]
                    .as_str()
                    .filter(|l| !l.starts_with("__"))
                {
                    target.insert(label.to_string());
                }
            }
        }
        let metrics = Metrics::new().expect("metrics");
        exercise(&metrics);
        let mut series = BTreeMap::new();
        for family in metrics.registry().gather() {
            let mut labels = target.clone();
            labels.extend(
                family
                    .get_metric()
                    .iter()
                    .flat_map(|metric| metric.get_label())
                    .map(|label| label.name().to_string()),
            );
            let name = family.name();
            let names = match family.get_field_type() {
                MetricType::HISTOGRAM => vec![
                    (format!("{name}_bucket"), Some("le")),
                    (format!("{name}_sum"), None),
                    (format!("{name}_count"), None),
                ],
                MetricType::SUMMARY => vec![
                    (name.to_string(), Some("quantile")),
                    (format!("{name}_sum"), None),
                    (format!("{name}_count"), None),
                ],
                _ => vec![(name.to_string(), None)],
            };
            for (name, extra) in names {
                let mut labels = labels.clone();
                labels.extend(extra.map(String::from));
                series.insert(name, labels);
            }
        }
        for name in SCRAPE_SERIES {
            series.insert(name.to_string(), target.clone());
        }
        Catalog { series }
    }

    /// What is wrong with the names in `expr`, and the labels its series may
    /// carry (for legends).
    fn check(&self, expr: &str) -> (Vec<String>, BTreeSet<String>) {
        let query = scan(expr);
        let mut problems = Vec::new();
        let mut labels = BTreeSet::new();
        if query.selectors.is_empty() {
            problems.push("selects no series".to_string());
        }
        for selector in &query.selectors {
            let Some(known) = self.series.get(&selector.metric) else {
                problems.push(format!(
                    "`{}` is not a series chainsmith exports",
                    selector.metric
                ));
                continue;
            };
            for matcher in &selector.matchers {
                if matcher.label != "__name__" && !known.contains(&matcher.label) {
                    problems.push(format!("`{}` has no label `{}`", selector.metric, matcher.label));
                }
            }
            labels.extend(known.iter().cloned());
        }
        for label in &query.grouping {
            if !labels.contains(label) {
                problems.push(format!(
                    "no series here has the label `{label}` it groups or matches by"
                ));
            }
        }
        (problems, labels)
    }
}

// ---------------------------------------------------------------------------
// PromQL names, without a PromQL parser: promtool checks the syntax, this
// only has to find the names.

#[derive(Debug, PartialEq)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

#[derive(Debug)]
struct Selector {
    /// Empty for a selector of labels only (`{job="x"}`).
    metric: String,
    matchers: Vec<Matcher>,
}

#[derive(Debug, Default)]
struct Query {
    selectors: Vec<Selector>,
    /// Labels named by `by`, `without`, `on`, `ignoring`, `group_left/right`.
    grouping: Vec<String>,
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"];

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    i
}

/// The string starting at `chars[start]` (a quote), unescaped, and the index
/// after it.
fn read_string(chars: &[char], start: usize) -> (String, usize) {
    let quote = chars[start];
    let mut text = String::new();
    let mut i = start + 1;
    while let Some(&c) = chars.get(i) {
        i += 1;
        match c {
            '\\' if quote != '`' => {
                text.extend(chars.get(i));
                i += 1;
            }
            c if c == quote => break,
            c => text.push(c),
        }
    }
    (text, i)
}

/// The matchers of the `{...}` at `chars[open]`, and the index after it.
fn read_matchers(chars: &[char], open: usize) -> (Vec<Matcher>, usize) {
    let mut matchers = Vec::new();
    let mut i = open + 1;
    loop {
        while chars.get(i).is_some_and(|c| c.is_whitespace() || *c == ',') {
            i += 1;
        }
        match chars.get(i) {
            None => return (matchers, i),
            Some('}') => return (matchers, i + 1),
            Some(_) => {}
        }
        let start = i;
        let label = if matches!(chars[i], '"' | '\'') {
            let (label, end) = read_string(chars, i);
            i = end;
            label
        } else {
            while chars.get(i).is_some_and(|c| is_name_char(*c)) {
                i += 1;
            }
            chars[start..i].iter().collect()
        };
        i = skip_space(chars, i);
        let op_start = i;
        while chars.get(i).is_some_and(|c| matches!(c, '=' | '!' | '~')) {
            i += 1;
        }
        let op: String = chars[op_start..i].iter().collect();
        i = skip_space(chars, i);
        let value = if chars.get(i).is_some_and(|c| matches!(c, '"' | '\'' | '`')) {
            let (value, end) = read_string(chars, i);
            i = end;
            value
        } else {
            String::new()
        };
        if i == start {
            // Not a matcher: promtool reports the syntax; move on.
            i += 1;
            continue;
        }
        matchers.push(Matcher { label, op, value });
    }
}

/// The series selectors and grouping labels of a PromQL expression.
fn scan(expr: &str) -> Query {
    let chars: Vec<char> = expr.chars().collect();
    let mut query = Query::default();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if matches!(c, '"' | '\'' | '`') {
            i = read_string(&chars, i).1;
        } else if c == '#' {
            while chars.get(i).is_some_and(|c| *c != '\n') {
                i += 1;
            }
        } else if c == '[' {
            // Ranges and subquery steps hold only durations.
            while chars.get(i).is_some_and(|c| *c != ']') {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            // Numbers and durations (`1e-3` leaves `-3`, a number too).
            while chars
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '.')
            {
                i += 1;
            }
            continue;
        } else if c == '{' {
            let (matchers, end) = read_matchers(&chars, i);
            let metric = matchers
                .iter()
                .find(|m| m.label == "__name__" && m.op == "=")
                .map(|m| m.value.clone())
                .unwrap_or_default();
            query.selectors.push(Selector { metric, matchers });
            i = end;
            continue;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while chars.get(i).is_some_and(|c| is_name_char(*c)) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let lower = word.to_ascii_lowercase();
            let next = skip_space(&chars, i);
            if LABEL_LISTS.contains(&lower.as_str()) {
                if chars.get(next) == Some(&'(') {
                    let close = (next..chars.len())
                        .find(|&k| chars[k] == ')')
                        .unwrap_or(chars.len());
                    let list: String = chars[next + 1..close].iter().collect();
                    query.grouping.extend(
                        list.split(',')
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(String::from),
                    );
                    i = close + 1;
                }
            } else if KEYWORDS.contains(&lower.as_str())
                || AGGREGATIONS.contains(&lower.as_str())
                || chars.get(next) == Some(&'(')
            {
                // An operator, an aggregation or a function.
            } else if chars.get(next) == Some(&'{') {
                let (matchers, end) = read_matchers(&chars, next);
                query.selectors.push(Selector {
                    metric: word,
                    matchers,
                });
                i = end;
            } else {
                query.selectors.push(Selector {
                    metric: word,
                    matchers: Vec::new(),
                });
            }
            continue;
        }
        i += 1;
    }
    query
}

/// Grafana's variables replaced by what promtool accepts: durations for the
/// interval variables, a regex for the others (which belong in `=~` matchers).
fn substitute_variables(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            let close = braced.find('}').unwrap_or(braced.len());
            (&braced[..close], braced.get(close + 1..).unwrap_or(""))
        } else {
            let end = after.find(|c: char| !is_name_char(c)).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.push_str(match name {
            "__rate_interval" | "__interval" => "1m",
            "__range" => "6h",
            _ => ".*",
        });
        rest = tail;
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------
// The manifests' parts

fn pod_monitor() -> Value {
    yaml("podmonitor.yaml")
}

fn prometheus_rule() -> Value {
    yaml("prometheusrule.yaml")
}

/// Each deployment an operator applies (`deploy/base`, each overlay),
/// rendered by `kubectl kustomize`.
fn deployments() -> Vec<(String, Vec<Value>)> {
    let deploy = workspace_root().join("deploy");
    let mut dirs = vec![deploy.join("base")];
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(deploy.join("overlays"))
        .expect("deploy/overlays")
        .map(|entry| entry.expect("deploy/overlays entry").path())
        .filter(|dir| dir.join("kustomization.yaml").exists())
        .collect();
    overlays.sort();
    dirs.extend(overlays);
    dirs.iter()
        .map(|dir| {
            let name = dir.strip_prefix(workspace_root()).unwrap_or(dir);
            (name.display().to_string(), render(dir))
        })
        .collect()
}

fn render(dir: &Path) -> Vec<Value> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubectl, needed to render deploy/ with its kustomize: {e}"));
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    text.split("\n---\n")
        .map(|doc| serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{}: {e}", dir.display())))
        .collect()
}

fn daemonset<'a>(name: &str, objects: &'a [Value]) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "DaemonSet").collect();
    assert_eq!(found.len(), 1, "{name}: one DaemonSet");
    found[0]
}

/// The `job` label the PodMonitor gives a DaemonSet's pods.
fn scrape_job(pod_monitor: &Value, daemonset: &Value) -> String {
    match pod_monitor.pointer("/spec/jobLabel").and_then(Value::as_str) {
        Some(key) => daemonset["spec"]["template"]["metadata"]["labels"][key]
            .as_str()
            .unwrap_or_else(|| panic!("the pods have no label {key}, the PodMonitor's jobLabel"))
            .to_string(),
        // The operator's default.
        None => format!(
            "{}/{}",
            str_at(pod_monitor, "/metadata/namespace"),
            str_at(pod_monitor, "/metadata/name")
        ),
    }
}

/// The one job chainsmith's series carry, whichever deployment runs it.
fn the_job(pod_monitor: &Value) -> String {
    let jobs: BTreeSet<String> = deployments()
        .iter()
        .map(|(name, objects)| scrape_job(pod_monitor, daemonset(name, objects)))
        .collect();
    assert_eq!(
        jobs.len(),
        1,
        "the deployments' pods get different jobs: {jobs:?}"
    );
    jobs.into_iter().next().expect("a job")
}

fn alerts(rule: &Value) -> Vec<&Value> {
    array_at(rule, "/spec/groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
        .filter(|rule| rule.get("alert").is_some())
        .collect()
}

/// A query of the dashboard, where it comes from, and the labels it shows.
struct DashboardQuery {
    origin: String,
    expr: String,
    /// The `{{label}}`s of a panel's legend, or a variable's label.
    shows: Vec<String>,
    /// Outside the chainsmith-only row: must work with kube-proxy too.
    kube_proxy_compatible: bool,
}

/// Every panel with the title of the row it is under.
fn panels(dashboard: &Value) -> Vec<(Option<String>, &Value)> {
    let mut out = Vec::new();
    let mut row = None;
    for panel in array_at(dashboard, "/panels") {
        if panel["type"] == "row" {
            row = panel["title"].as_str().map(String::from);
            for nested in panel["panels"].as_array().into_iter().flatten() {
                out.push((row.clone(), nested));
            }
        }
        out.push((row.clone(), panel));
    }
    out
}

fn dashboard_queries(dashboard: &Value) -> Vec<DashboardQuery> {
    let mut queries = Vec::new();
    for variable in array_at(dashboard, "/templating/list") {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]
            .get("query")
            .unwrap_or(&variable["query"])
            .as_str()
            .expect("variable query");
        // Grafana's label_values(selector, label): the selector is PromQL, the
        // label must be on its series.
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: only label_values() is checked", variable["name"]));
        let (selector, label) = inner.rsplit_once(',').expect("label_values(selector, label)");
        queries.push(DashboardQuery {
            origin: format!("variable {}", variable["name"]),
            expr: substitute_variables(selector.trim()),
            shows: vec![label.trim().to_string()],
            kube_proxy_compatible: true,
        });
    }
    for (row, panel) in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(DashboardQuery {
                origin: format!(
                    "panel {} {} {}",
                    panel["id"],
                    panel["title"],
                    target["refId"].as_str().unwrap_or_default()
                ),
                expr: substitute_variables(target["expr"].as_str().unwrap_or_default()),
                shows: legend_labels(target["legendFormat"].as_str().unwrap_or_default()),
                kube_proxy_compatible: row.as_deref() != Some(CHAINSMITH_ROW),
            });
        }
    }
    queries
}

/// `{{label}}` references in a legend.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|part| part.split_once("}}"))
        .map(|(label, _)| label.trim().to_string())
        .collect()
}

/// GitHub's anchor for a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn the_pod_monitor_scrapes_every_deployments_pods_on_their_metrics_port() {
    let monitor = pod_monitor();
    assert_eq!(str_at(&monitor, "/apiVersion"), "monitoring.coreos.com/v1");
    assert_eq!(str_at(&monitor, "/kind"), "PodMonitor");
    let namespaces: Vec<&str> = array_at(&monitor, "/spec/namespaceSelector/matchNames")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let selector = monitor.pointer("/spec/selector").expect("selector");
    assert!(
        selector.get("matchExpressions").is_none(),
        "matchExpressions are not evaluated here"
    );
    let match_labels = selector["matchLabels"].as_object().expect("matchLabels");
    assert!(!match_labels.is_empty(), "an empty selector selects every pod");
    let endpoints = array_at(&monitor, "/spec/podMetricsEndpoints");
    assert!(!endpoints.is_empty());
    let mut configs_checked = 0;
    for (name, objects) in deployments() {
        let daemonset = daemonset(&name, &objects);
        let namespace = daemonset["metadata"]["namespace"].as_str().unwrap_or("default");
        assert!(
            namespaces.contains(&namespace),
            "{name}: namespace {namespace} not selected"
        );
        let labels = &daemonset["spec"]["template"]["metadata"]["labels"];
        for (key, value) in match_labels {
            assert_eq!(&labels[key], value, "{name}: the pods' label {key}");
        }
        let ports: Vec<&Value> = array_at(daemonset, "/spec/template/spec/containers")
            .iter()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .collect();
        let mut scraped_ports = Vec::new();
        for endpoint in endpoints {
            assert!(
                endpoint["path"].is_null() || endpoint["path"] == "/metrics",
                "{endpoint}"
            );
            let port = ports
                .iter()
                .find(|p| p["name"] == endpoint["port"])
                .unwrap_or_else(|| panic!("{name}: no container port named {}", endpoint["port"]));
            scraped_ports.push(port["containerPort"].as_u64().expect("containerPort"));
        }
        // The configuration a deployment ships must serve metrics where the
        // PodMonitor looks (an overlay using kubeadm's ships none).
        for config_map in objects.iter().filter(|o| o["kind"] == "ConfigMap") {
            let texts = config_map["data"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, v)| v.as_str());
            for text in texts {
                let Ok(config) = serde_saphyr::from_str::<Value>(text) else {
                    continue;
                };
                if config["kind"] != "KubeProxyConfiguration" {
                    continue;
                }
                let address: SocketAddr = config["metricsBindAddress"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: no metricsBindAddress, so 127.0.0.1:10249"))
                    .parse()
                    .expect("metricsBindAddress");
                assert!(!address.ip().is_loopback(), "{name}: metrics bound to {address}");
                assert!(
                    scraped_ports.contains(&u64::from(address.port())),
                    "{name}: metrics on {address}, not on the scraped port {scraped_ports:?}"
                );
                configs_checked += 1;
            }
        }
    }
    assert!(
        configs_checked > 0,
        "no deployment ships a KubeProxyConfiguration to check"
    );
    // One job everywhere, for the alerts' selectors.
    the_job(&monitor);
}

#[test]
fn every_alert_has_severity_summary_description_and_its_runbook_section() {
    let rule = prometheus_rule();
    assert_eq!(str_at(&rule, "/apiVersion"), "monitoring.coreos.com/v1");
    assert_eq!(str_at(&rule, "/kind"), "PrometheusRule");
    let runbook = read("RUNBOOK.md");
    let sections: BTreeSet<String> = runbook
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .map(anchor)
        .collect();
    let alerts = alerts(&rule);
    assert!(!alerts.is_empty());
    let mut names = BTreeSet::new();
    for alert in &alerts {
        let name = alert["alert"].as_str().expect("alert name");
        assert!(names.insert(name), "{name} twice");
        let severity = alert.pointer("/labels/severity").and_then(Value::as_str);
        assert!(
            matches!(severity, Some("critical" | "warning" | "info")),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description", "runbook_url"] {
            let text = alert["annotations"][key].as_str().unwrap_or_default();
            assert!(!text.trim().is_empty(), "{name}: no {key}");
        }
        let url = str_at(alert, "/annotations/runbook_url");
        let expected = format!("deploy/monitoring/RUNBOOK.md#{}", anchor(name));
        assert_eq!(url, expected, "{name}: runbook_url");
        assert!(
            sections.contains(&anchor(name)),
            "RUNBOOK.md has no `## {name}` section"
        );
    }
    // And no section for an alert that is gone.
    let alert_sections: BTreeSet<String> = names.iter().map(|n| anchor(n)).collect();
    let stale: Vec<&String> = sections
        .iter()
        .filter(|s| s.starts_with("chainsmith") && !alert_sections.contains(*s))
        .collect();
    assert!(
        stale.is_empty(),
        "RUNBOOK.md sections without an alert: {stale:?}"
    );
}

#[test]
fn alerts_select_the_pod_monitors_job_and_only_exported_names() {
    let monitor = pod_monitor();
    let job = the_job(&monitor);
    let catalog = Catalog::new(&monitor);
    let mut problems = Vec::new();
    for alert in alerts(&prometheus_rule()) {
        let name = &alert["alert"];
        let expr = alert["expr"].as_str().expect("expr");
        problems.extend(catalog.check(expr).0.into_iter().map(|p| format!("{name}: {p}")));
        for selector in scan(expr).selectors {
            let selects_job = selector
                .matchers
                .iter()
                .any(|m| m.label == "job" && m.op == "=" && m.value == job);
            if !selects_job {
                problems.push(format!(
                    "{name}: `{}` does not select job=\"{job}\"",
                    selector.metric
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_rule_groups(dir.path(), "rules.yaml", &prometheus_rule()["spec"]);
    std::fs::write(dir.path().join("alerts.test.yaml"), read("alerts.test.yaml")).expect("copy");
    promtool(dir.path(), &["check", "rules", "rules.yaml"]);
    promtool(dir.path(), &["test", "rules", "alerts.test.yaml"]);
}

#[test]
fn every_alert_is_tested_firing_and_quiet() {
    let tests = yaml("alerts.test.yaml");
    let files: Vec<&str> = array_at(&tests, "/rule_files")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // The file the promtool test above writes.
    assert_eq!(files, ["rules.yaml"]);
    let rule = prometheus_rule();
    let alerts: BTreeSet<&str> = alerts(&rule).iter().filter_map(|a| a["alert"].as_str()).collect();
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in array_at(&tests, "/tests") {
        for check in case["alert_rule_test"].as_array().into_iter().flatten() {
            let name = check["alertname"].as_str().expect("alertname");
            // promtool passes an empty expectation for an alert that does not exist.
            assert!(
                alerts.contains(name),
                "alerts.test.yaml tests unknown alert {name}"
            );
            let expected = check["exp_alerts"].as_array().map_or(0, Vec::len);
            if expected == 0 {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    for name in &alerts {
        assert!(firing.contains(name), "no test where {name} fires");
        assert!(quiet.contains(name), "no test where {name} stays quiet");
    }
}

#[test]
fn dashboard_queries_are_promql_over_exported_names() {
    let monitor = pod_monitor();
    let catalog = Catalog::new(&monitor);
    let queries = dashboard_queries(&dashboard());
    assert!(!queries.is_empty());
    let mut problems = Vec::new();
    let mut rules = Vec::new();
    for (index, query) in queries.iter().enumerate() {
        let (found, labels) = catalog.check(&query.expr);
        problems.extend(found.into_iter().map(|p| format!("{}: {p}", query.origin)));
        for label in &query.shows {
            if !labels.contains(label) {
                problems.push(format!(
                    "{}: shows label `{label}`, which none of its series has",
                    query.origin
                ));
            }
        }
        if query.kube_proxy_compatible {
            for selector in scan(&query.expr).selectors {
                let upstream = selector.metric.starts_with("kubeproxy_")
                    || SCRAPE_SERIES.contains(&selector.metric.as_str());
                if !upstream {
                    problems.push(format!(
                        "{}: `{}` is not a kube-proxy metric; move the panel to the \"{CHAINSMITH_ROW}\" row",
                        query.origin, selector.metric
                    ));
                }
            }
        }
        rules.push(json!({"record": format!("dashboard:query_{index}"), "expr": query.expr}));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // promtool's parser for the syntax; rule names map back to origins here.
    let dir = tempfile::tempdir().expect("tempdir");
    write_rule_groups(
        dir.path(),
        "dashboard.yaml",
        &json!({"groups": [{"name": "dashboard", "rules": rules}]}),
    );
    for (index, query) in queries.iter().enumerate() {
        println!("dashboard:query_{index} = {}: {}", query.origin, query.expr);
    }
    promtool(dir.path(), &["check", "rules", "dashboard.yaml"]);
}

#[test]
fn dashboard_panels_use_the_datasource_variable() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let variables = array_at(&dashboard, "/templating/list");
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"),
        "no `datasource` variable of Prometheus data sources"
    );
    for name in ["node", "instance"] {
        assert!(
            variables.iter().any(|v| v["name"] == name),
            "no `{name}` variable"
        );
    }
    let uses_variable = |value: &Value| value["uid"] == "${datasource}" && value["type"] == "prometheus";
    let mut ids = BTreeSet::new();
    for (_, panel) in panels(&dashboard) {
        let title = &panel["title"];
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title} has no id"));
        assert!(ids.insert(id), "panel id {id} twice");
        if panel["type"] == "row" {
            continue;
        }
        assert!(uses_variable(&panel["datasource"]), "panel {title}: datasource");
        let targets = panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            assert!(
                uses_variable(&target["datasource"]),
                "panel {title}: target datasource"
            );
            assert!(
                target["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "panel {title}: empty query"
            );
        }
    }
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        assert!(
            uses_variable(&variable["datasource"]),
            "variable {}: datasource",
            variable["name"]
        );
    }
}

/// The scanner itself, since a scanner that finds nothing would let every
/// check above pass.
#[test]
fn the_scanner_finds_names_and_misspellings_are_reported() {
    let query = scan(
        r#"histogram_quantile(0.99, sum by (le, ip_family) (rate(a_bucket{job=~"x", node!="y,}"}[5m] offset 1h)))
           / on (pod) group_left (node) b unless {__name__="c"} > 1e-3 and sum(d) without (z)"#,
    );
    let metrics: Vec<&str> = query.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(metrics, ["a_bucket", "b", "c", "d"]);
    assert_eq!(
        query.selectors[0].matchers,
        [
            Matcher {
                label: "job".into(),
                op: "=~".into(),
                value: "x".into()
            },
            Matcher {
                label: "node".into(),
                op: "!=".into(),
                value: "y,}".into()
            },
        ]
    );
    assert_eq!(query.grouping, ["le", "ip_family", "pod", "node", "z"]);
    assert_eq!(
        substitute_variables(r#"rate(x{a=~"$node",b=~"${instance}"}[$__rate_interval])"#),
        r#"rate(x{a=~".*",b=~".*"}[1m])"#
    );

    let catalog = Catalog::new(&pod_monitor());
    let good = r#"sum by (instance, table) (kubeproxy_sync_proxy_rules_iptables_total{ip_family="IPv4"})"#;
    assert_eq!(catalog.check(good).0, Vec::<String>::new());
    for (bad, problem) in [
        (
            "rate(kubeproxy_sync_proxy_rules_duration_second_count[5m])",
            "`kubeproxy_sync_proxy_rules_duration_second_count` is not a series chainsmith exports",
        ),
        (
            r#"kubeproxy_sync_proxy_rules_iptables_total{family="IPv4"}"#,
            "`kubeproxy_sync_proxy_rules_iptables_total` has no label `family`",
        ),
        (
            "sum by (resource) (chainsmith_drift_detected_total)",
            "no series here has the label `resource` it groups or matches by",
        ),
        ("vector(1)", "selects no series"),
    ] {
        assert_eq!(catalog.check(bad).0, [problem], "{bad}");
    }
}
