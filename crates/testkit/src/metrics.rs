//! Reading a Prometheus text exposition, as the node tests and the node
//! examples check the proxy's `/metrics`.

/// The value of the first sample of metric `name` whose line contains
/// `labels` (e.g. `ip_family="IPv4"`; empty for any), if there is one.
pub fn metric_sample(exposition: &str, name: &str, labels: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && line.contains(labels)
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}
