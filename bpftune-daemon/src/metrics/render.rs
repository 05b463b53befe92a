//! A snapshot as exposition text, through the Prometheus project's client
//! crate (`prometheus-client`), so names, escaping, `_total` suffixes,
//! units and `# EOF` follow the specifications: OpenMetrics 1.0 for
//! `-q metrics` and scrapers that ask for it, Prometheus text 0.0.4 for
//! node_exporter's textfile collector and everyone else.

use std::sync::atomic::AtomicU64;

use bpftune_core::evidence::Verdict;
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::snapshot::{FEATURE_STATES, Snapshot, TUNER_STATES};

/// Which text format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Prometheus,
}

/// `Content-Type` of OpenMetrics text 1.0.0.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
        }
    }

    /// OpenMetrics if the `Accept` header names it (Prometheus does), else
    /// the 0.0.4 text every scraper reads.
    pub fn from_accept(accept: &str) -> Self {
        if accept.to_ascii_lowercase().contains("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

type Labels = Vec<(&'static str, String)>;
type FloatCounter = Counter<f64, AtomicU64>;

fn gauge_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn counter_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Register every metric of the snapshot.
fn registry(s: &Snapshot) -> Registry {
    let mut reg = Registry::with_prefix("bpftune");

    let info = gauge_family(&mut reg, "build_info", "bpftune version (always 1)");
    info.get_or_create(&vec![("version", s.version.clone())]).set(1);

    let changes = counter_family(
        &mut reg,
        "changes",
        "Changes a tuner made to a tunable, by the scenario that led to them and the network namespace (global, the namespace cookie, or retired for namespaces that are gone)",
    );
    for c in &s.changes {
        let labels = vec![
            ("tuner", c.tuner.clone()),
            ("tunable", c.tunable.clone()),
            ("scenario", c.scenario.clone()),
            ("netns", c.netns.clone()),
        ];
        changes.get_or_create(&labels).inc_by(c.count);
    }

    let value = gauge_family(
        &mut reg,
        "tunable_value",
        "Value bpftune last set, per tunable it changed, network namespace and position (index) in a multi-value sysctl",
    );
    let original = gauge_family(
        &mut reg,
        "tunable_original_value",
        "Value a tunable had before bpftune first changed it, per network namespace and position (index)",
    );
    for v in &s.values {
        let labels = vec![
            ("tuner", v.tuner.clone()),
            ("tunable", v.tunable.clone()),
            ("netns", v.netns.clone()),
            ("index", v.index.to_string()),
        ];
        value.get_or_create(&labels).set(v.current);
        original.get_or_create(&labels).set(v.original);
    }

    let verdicts = counter_family(
        &mut reg,
        "verdicts",
        "Verdicts on the changes a tuner made to a tunable, judged by the effect on the counter its scenario aims to improve: helped, neutral, hurt, unknown (not enough data); for every tunable changed in a scenario that is judged, all namespaces",
    );
    let reverts = counter_family(
        &mut reg,
        "reverts",
        "Changes a tuner made to a tunable that were judged hurt and reverted, all namespaces",
    );
    for v in &s.verdicts {
        for verdict in Verdict::ALL {
            let labels =
                vec![("tuner", v.tuner.clone()), ("tunable", v.tunable.clone()), ("verdict", verdict.as_str().into())];
            verdicts.get_or_create(&labels).inc_by(v.counts[verdict.index()]);
        }
        reverts.get_or_create(&vec![("tuner", v.tuner.clone()), ("tunable", v.tunable.clone())]).inc_by(v.reverted);
    }

    let state = gauge_family(
        &mut reg,
        "tuner_state",
        "1 for the state each tuner is in: active, manual (an administrator took over or removed its plugin), failed (did not load, or was disabled after a failure), inactive",
    );
    for t in &s.tuners {
        for st in TUNER_STATES {
            state
                .get_or_create(&vec![("tuner", t.name.clone()), ("state", st.to_string())])
                .set(i64::from(t.state == st));
        }
    }

    let feature = gauge_family(
        &mut reg,
        "tuner_feature",
        "1 for the state each part of a tuner is in on this kernel: active, fallback (works another way), off, not needed",
    );
    for f in &s.features {
        for st in FEATURE_STATES {
            let labels = vec![("tuner", f.tuner.clone()), ("part", f.part.clone()), ("state", st.to_string())];
            feature.get_or_create(&labels).set(i64::from(f.state == st));
        }
    }

    let info = gauge_family(
        &mut reg,
        "netns_info",
        "The workload a network namespace bpftune changed belongs to (always 1): the cgroup of a process in it and, where the path shows them, its systemd unit, Kubernetes pod UID and container id; join on netns",
    );
    for n in &s.netns_info {
        let id = &n.identity;
        let labels = vec![
            ("netns", n.netns.clone()),
            ("cgroup", id.cgroup.clone()),
            ("unit", id.unit.clone()),
            ("pod_uid", id.pod_uid.clone()),
            ("container_id", id.container_id.clone()),
        ];
        info.get_or_create(&labels).set(1);
    }

    let received = Counter::<u64>::default();
    reg.register(
        "events_received",
        "Events read from the shared ring buffer and dispatched to tuners",
        received.clone(),
    );
    received.inc_by(s.events.received);
    let drops = Counter::<u64>::default();
    reg.register(
        "ringbuf_events_dropped",
        "Events BPF programs could not post because the shared ring buffer was full",
        drops.clone(),
    );
    drops.inc_by(s.events.ringbuf_dropped);
    let discarded = counter_family(
        &mut reg,
        "events_discarded",
        "Events the daemon read but discarded: malformed (wrong size) or queue_full (its event queue was full)",
    );
    discarded.get_or_create(&vec![("reason", "malformed".to_string())]).inc_by(s.events.malformed);
    discarded.get_or_create(&vec![("reason", "queue_full".to_string())]).inc_by(s.events.queue_full);

    let netns = Gauge::<i64>::default();
    reg.register("netns_known", "Network namespaces the daemon tracks besides its own", netns.clone());
    netns.set(clamp(s.netns_known));

    if let Some(enabled) = s.bpf_stats_enabled {
        let g = Gauge::<i64>::default();
        reg.register(
            "bpf_stats_enabled",
            "kernel.bpf_stats_enabled: BPF program run time and count are measured (and exported) only while it is 1",
            g.clone(),
        );
        g.set(i64::from(enabled));
    }
    if s.bpf_stats_enabled == Some(true) {
        let time = Family::<Labels, FloatCounter>::default();
        reg.register_with_unit(
            "bpf_program_run_time",
            "Time the kernel spent running each BPF program of the daemon's tuners while kernel.bpf_stats_enabled was 1",
            Unit::Seconds,
            time.clone(),
        );
        let runs = counter_family(
            &mut reg,
            "bpf_program_runs",
            "Runs of each BPF program of the daemon's tuners while kernel.bpf_stats_enabled was 1",
        );
        for p in &s.programs {
            let labels = vec![("id", p.id.to_string()), ("name", p.name.clone()), ("type", p.kind.clone())];
            time.get_or_create(&labels).inc_by(p.run_time_ns as f64 / 1e9);
            runs.get_or_create(&labels).inc_by(p.run_cnt);
        }
    }

    if let Some(p) = s.process {
        let rss = Gauge::<i64>::default();
        reg.register_with_unit("resident_memory", "Resident memory of the daemon", Unit::Bytes, rss.clone());
        rss.set(clamp(p.resident_bytes));
        let cpu = FloatCounter::default();
        reg.register_with_unit(
            "cpu",
            "CPU time (user and system) the daemon used, its tuners included",
            Unit::Seconds,
            cpu.clone(),
        );
        cpu.inc_by(p.cpu_seconds);
        let threads = Gauge::<i64>::default();
        reg.register("threads", "Threads of the daemon", threads.clone());
        threads.set(clamp(p.threads));
    }
    reg
}

/// Sort the samples within each family (the client crate keeps a family's
/// series in a hash map), so scrapes and textfiles read and diff the same
/// from one time to the next. Every family here has one sample per label
/// set, so no sample group is split.
fn sort_samples(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut block: Vec<&str> = Vec::new();
    let flush = |block: &mut Vec<&str>, out: &mut String| {
        block.sort_unstable();
        for l in block.drain(..) {
            out.push_str(l);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut block, &mut out);
            out.push_str(line);
            out.push('\n');
        } else {
            block.push(line);
        }
    }
    flush(&mut block, &mut out);
    out
}

/// The snapshot as exposition text; OpenMetrics ends with `# EOF`.
pub fn render(s: &Snapshot, format: Format) -> String {
    let reg = registry(s);
    let mut out = String::new();
    let ok = match format {
        Format::OpenMetrics => text::encode(&mut out, &reg),
        Format::Prometheus => prometheus_text::encode(&mut out, &reg),
    };
    if ok.is_err() {
        // Writing to a String does not fail; keep the output valid anyway.
        out.clear();
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
    }
    sort_samples(&out)
}

#[cfg(test)]
mod tests {
    use super::super::proc::{ProcessStats, ProgStats};
    use super::super::snapshot::*;
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            version: "9.9.9".into(),
            changes: vec![ChangeCount {
                tuner: "tcp_buffer".into(),
                tunable: "net.ipv4.tcp_rmem".into(),
                scenario: "need to increase TCP buffer size(s)".into(),
                netns: "4097".into(),
                count: 3,
            }],
            values: (0..3)
                .map(|index| TunableValue {
                    tuner: "tcp_buffer".into(),
                    tunable: "net.ipv4.tcp_rmem".into(),
                    netns: "4097".into(),
                    index,
                    current: [4096, 131072, 8388608][index],
                    original: [4096, 131072, 6291456][index],
                })
                .collect(),
            verdicts: vec![TunableVerdicts {
                tuner: "tcp_buffer".into(),
                tunable: "net.ipv4.tcp_rmem".into(),
                counts: [2, 1, 3, 0],
                reverted: 1,
            }],
            tuners: vec![
                TunerStatus { name: "tcp_buffer".into(), state: "active", detail: String::new() },
                TunerStatus { name: "broken".into(), state: "failed", detail: "init failed".into() },
            ],
            features: vec![FeatureStatus {
                tuner: "net_buffer".into(),
                part: "flow_limit".into(),
                state: "off",
                detail: "no bitmap".into(),
            }],
            netns_info: vec![NetnsInfo {
                netns: "4097".into(),
                identity: crate::identity::Identity {
                    cgroup: "/system.slice/docker-ab.scope".into(),
                    unit: "docker-ab.scope".into(),
                    container_id: "ab".into(),
                    ..Default::default()
                },
            }],
            events: EventCounts { received: 10, malformed: 1, queue_full: 0, ringbuf_dropped: 2 },
            bpf_stats_enabled: Some(true),
            programs: vec![ProgStats {
                id: 77,
                name: "bpftune_test".into(),
                kind: "tracing".into(),
                run_time_ns: 1_500_000_000,
                run_cnt: 12,
            }],
            process: Some(ProcessStats { resident_bytes: 8 << 20, cpu_seconds: 1.25, threads: 2 }),
            ..Snapshot::default()
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn openmetrics_names_labels_values_and_eof() {
        let text = render(&snapshot(), Format::OpenMetrics);
        let l = lines(&text);
        assert_eq!(l.last(), Some(&"# EOF"), "{text}");
        assert!(l.contains(&"# TYPE bpftune_changes counter"), "{text}");
        assert!(l.contains(&"bpftune_changes_total{tuner=\"tcp_buffer\",tunable=\"net.ipv4.tcp_rmem\",scenario=\"need to increase TCP buffer size(s)\",netns=\"4097\"} 3"), "{text}");
        assert!(l.contains(&"bpftune_tunable_value{tuner=\"tcp_buffer\",tunable=\"net.ipv4.tcp_rmem\",netns=\"4097\",index=\"2\"} 8388608"), "{text}");
        assert!(l.contains(&"bpftune_tunable_original_value{tuner=\"tcp_buffer\",tunable=\"net.ipv4.tcp_rmem\",netns=\"4097\",index=\"2\"} 6291456"), "{text}");
        assert!(l.contains(&"# TYPE bpftune_verdicts counter"), "{text}");
        assert!(
            l.contains(
                &"bpftune_verdicts_total{tuner=\"tcp_buffer\",tunable=\"net.ipv4.tcp_rmem\",verdict=\"helped\"} 2"
            ),
            "{text}"
        );
        assert!(
            l.contains(
                &"bpftune_verdicts_total{tuner=\"tcp_buffer\",tunable=\"net.ipv4.tcp_rmem\",verdict=\"neutral\"} 1"
            ),
            "{text}"
        );
        assert!(
            l.contains(
                &"bpftune_verdicts_total{tuner=\"tcp_buffer\",tunable=\"net.ipv4.tcp_rmem\",verdict=\"hurt\"} 3"
            ),
            "{text}"
        );
        assert!(
            l.contains(
                &"bpftune_verdicts_total{tuner=\"tcp_buffer\",tunable=\"net.ipv4.tcp_rmem\",verdict=\"unknown\"} 0"
            ),
            "{text}"
        );
        assert!(l.contains(&"# TYPE bpftune_reverts counter"), "{text}");
        assert!(l.contains(&"bpftune_reverts_total{tuner=\"tcp_buffer\",tunable=\"net.ipv4.tcp_rmem\"} 1"), "{text}");
        assert!(l.contains(&"bpftune_tuner_state{tuner=\"broken\",state=\"failed\"} 1"), "{text}");
        assert!(l.contains(&"bpftune_tuner_state{tuner=\"broken\",state=\"active\"} 0"), "{text}");
        assert!(
            l.contains(&"bpftune_tuner_feature{tuner=\"net_buffer\",part=\"flow_limit\",state=\"off\"} 1"),
            "{text}"
        );
        assert!(
            l.contains(&"bpftune_tuner_feature{tuner=\"net_buffer\",part=\"flow_limit\",state=\"not needed\"} 0"),
            "{text}"
        );
        assert!(l.contains(&"bpftune_events_received_total 10"), "{text}");
        assert!(l.contains(&"bpftune_ringbuf_events_dropped_total 2"), "{text}");
        assert!(l.contains(&"bpftune_events_discarded_total{reason=\"malformed\"} 1"), "{text}");
        assert!(l.contains(&"# UNIT bpftune_bpf_program_run_time_seconds seconds"), "{text}");
        assert!(
            l.contains(
                &"bpftune_bpf_program_run_time_seconds_total{id=\"77\",name=\"bpftune_test\",type=\"tracing\"} 1.5"
            ),
            "{text}"
        );
        assert!(
            l.contains(&"bpftune_bpf_program_runs_total{id=\"77\",name=\"bpftune_test\",type=\"tracing\"} 12"),
            "{text}"
        );
        assert!(l.contains(&"bpftune_resident_memory_bytes 8388608"), "{text}");
        assert!(l.contains(&"bpftune_cpu_seconds_total 1.25"), "{text}");
        assert!(l.contains(&"bpftune_build_info{version=\"9.9.9\"} 1"), "{text}");
        assert!(
            l.contains(&"bpftune_netns_info{netns=\"4097\",cgroup=\"/system.slice/docker-ab.scope\",unit=\"docker-ab.scope\",pod_uid=\"\",container_id=\"ab\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn samples_are_in_a_stable_order() {
        let text = render(&snapshot(), Format::OpenMetrics);
        let states: Vec<&str> = text.lines().filter(|l| l.starts_with("bpftune_tuner_state{")).collect();
        let mut sorted = states.clone();
        sorted.sort_unstable();
        assert_eq!(states, sorted);
        assert_eq!(states.len(), 2 * TUNER_STATES.len());
        assert_eq!(render(&snapshot(), Format::OpenMetrics), text);
    }

    #[test]
    fn prometheus_text_for_the_textfile_collector() {
        let text = render(&snapshot(), Format::Prometheus);
        assert!(!text.contains("# EOF"), "{text}");
        assert!(text.contains("# TYPE bpftune_changes_total counter\n"), "{text}");
        assert!(text.contains("bpftune_cpu_seconds_total 1.25\n"), "{text}");
        assert!(text.contains("# TYPE bpftune_verdicts_total counter\n"), "{text}");
        assert!(text.contains("# TYPE bpftune_reverts_total counter\n"), "{text}");
        for (verdict, n) in [("helped", 2), ("neutral", 1), ("hurt", 3), ("unknown", 0)] {
            let line = format!(
                "bpftune_verdicts_total{{tuner=\"tcp_buffer\",tunable=\"net.ipv4.tcp_rmem\",verdict=\"{verdict}\"}} {n}\n"
            );
            assert!(text.contains(&line), "{line}{text}");
        }
        assert!(
            text.contains("bpftune_reverts_total{tuner=\"tcp_buffer\",tunable=\"net.ipv4.tcp_rmem\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn bpf_programs_only_while_stats_are_on() {
        let mut s = snapshot();
        s.bpf_stats_enabled = Some(false);
        let text = render(&s, Format::OpenMetrics);
        assert!(text.contains("bpftune_bpf_stats_enabled 0\n"), "{text}");
        assert!(!text.contains("bpf_program_run"), "{text}");
    }

    #[test]
    fn label_values_are_escaped_and_empty_snapshot_is_valid() {
        let mut s = snapshot();
        s.changes[0].scenario = "say \"hi\"\\\n".into();
        let text = render(&s, Format::OpenMetrics);
        assert!(text.contains(r#"scenario="say \"hi\"\\\n""#), "{text}");
        let empty = render(&Snapshot::default(), Format::OpenMetrics);
        assert!(empty.ends_with("# EOF\n"), "{empty}");
        assert!(empty.contains("bpftune_events_received_total 0"), "{empty}");
        // No tunable changed in a judged scenario: no series (and the client
        // crate leaves an empty family out).
        assert!(!empty.contains("bpftune_verdicts") && !empty.contains("bpftune_reverts"), "{empty}");
    }

    /// The Grafana dashboard (docs/grafana/bpftune.json) is valid JSON and
    /// its queries name only metrics a daemon exports.
    #[test]
    fn grafana_dashboard_names_exported_metrics() {
        let text = include_str!("../../../docs/grafana/bpftune.json");
        let v: serde_json::Value = serde_json::from_str(text).expect("dashboard is valid JSON");
        let exported: Vec<String> = render(&snapshot(), Format::OpenMetrics)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
            .collect();
        fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, x) in m {
                        match x.as_str() {
                            Some(s) if k == "expr" || k == "query" => out.push(s.to_string()),
                            _ => exprs(x, out),
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        exprs(&v, &mut all);
        assert!(all.len() > 10, "{all:?}");
        let mut used = 0;
        for e in &all {
            for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("bpftune_") {
                    used += 1;
                    assert!(exported.iter().any(|n| n == word), "dashboard uses {word}, not exported: {exported:?}");
                }
            }
        }
        assert!(used > 10);
    }

    #[test]
    fn accept_header_chooses_the_format() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(prom), Format::OpenMetrics);
        assert_eq!(Format::from_accept("*/*"), Format::Prometheus);
        assert_eq!(Format::from_accept(""), Format::Prometheus);
        assert!(Format::OpenMetrics.content_type().starts_with("application/openmetrics-text"));
    }
}
