//! Judging every change by its effect ("observe the effect of that tuning
//! and re-tune if necessary"): for each scenario that means to improve a
//! signal the kernel counts (drops, failures, bytes moved), the daemon
//! samples that counter in the change's namespace over a window before the
//! change and the same window after it, and gives a verdict: `helped`,
//! `neutral`, `hurt`, or `unknown` (not enough data). A change judged
//! `hurt` is reverted by the host and that tuner backs off that tunable in
//! that namespace for an exponentially growing time.
//!
//! This module is the bookkeeping and the arithmetic, with time passed in
//! (so it is tested without a kernel): which signal a scenario is judged
//! by, the counter samples per namespace, the changes waiting for their
//! after-window, the verdict rule, and the back-off table. The host
//! ([`crate::host`]) reads the counters (through the namespace worker),
//! logs, journals and reverts.
//!
//! Sampling costs nothing on an idle machine: a namespace is sampled once
//! a second only while its events arrive (and for [`ACTIVE_FOR`] after),
//! or while one of its changes waits for a verdict. The first change in a
//! namespace that was quiet until its first event has no before-window and
//! is judged `unknown`; the ones that follow are judged against the state
//! the previous change left.
//!
//! A scenario may also name a guard: a gauge that must not get worse while
//! the main signal does not improve. TCP buffer raises are guarded by the
//! round-trip time of the namespace's active connections
//! ([`crate::sock_rtt`]): a raise that moves no more bytes but makes the
//! data wait longer in a queue ("a buffer raise that only adds latency")
//! is judged `hurt`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// The window before and after a change.
pub const WINDOW: Duration = Duration::from_secs(5);
/// A window shorter than this gives `unknown`.
pub const MIN_WINDOW: Duration = Duration::from_secs(2);
/// How often an active namespace is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// A namespace stays active this long after its last event.
pub const ACTIVE_FOR: Duration = Duration::from_secs(30);
/// Namespaces sampled at once, at most (the least recently active goes).
pub const MAX_ACTIVE: usize = 1024;
/// Namespaces whose RTT guard is read per sample tick, at most: each
/// `sock_diag` dump walks the kernel's whole established hash table (1-2 ms
/// of CPU here, `bench/verdicts/RESULTS.md`). Namespaces with a change
/// waiting for its verdict come first; the others' guards go without
/// readings that tick.
pub const MAX_GUARD_READS: usize = 4;
/// The first back-off after a revert; each further revert of the same
/// tunable in the same namespace doubles it, up to [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(60);
pub const BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// Which way is better for a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

/// A signal a change can be judged by, read per namespace: a sum of
/// monotonic kernel counters (judged by its rate), or a gauge (judged by
/// its median over the window; [`Signal::is_gauge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// UDP receive drops: Udp/Udp6 RcvbufErrors + MemErrors.
    UdpDrops,
    /// Bytes received (IpExt InOctets).
    RxBytes,
    /// Bytes sent (IpExt OutOctets).
    TxBytes,
    /// TCP memory pressure episodes (TcpExt TCPMemoryPressures).
    TcpMemPressure,
    /// Listen queue drops (TcpExt ListenDrops).
    ListenDrops,
    /// Packets dropped at the per-CPU backlog (softnet_stat, column 2).
    BacklogDrops,
    /// NAPI polls cut short by the budget (softnet_stat, column 3).
    TimeSqueeze,
    /// Reassembly failures (Ip ReasmFails + Ip6ReasmFails).
    ReasmFails,
    /// Neighbour table overflows (arp_cache + ndisc_cache table_fulls).
    NeighFull,
    /// Mean round-trip time, in ms, of the TCP sockets that moved data in
    /// the last second (a gauge, from `sock_diag`; judged by its median
    /// over a window).
    TcpRtt,
}

/// Number of [`Signal`]s.
pub const SIGNALS: usize = 10;

/// A gauge guard is judged `hurt` when its median grew by this factor and
/// by [`GUARD_MIN_DELTA`] (milliseconds of RTT) at least, and `helped` when
/// it shrank as much: the same tenth by which more bytes count as helped.
pub const GUARD_RATIO: f64 = 1.1;
pub const GUARD_MIN_DELTA: f64 = 2.0;

impl Signal {
    pub const ALL: [Signal; SIGNALS] = [
        Signal::UdpDrops,
        Signal::RxBytes,
        Signal::TxBytes,
        Signal::TcpMemPressure,
        Signal::ListenDrops,
        Signal::BacklogDrops,
        Signal::TimeSqueeze,
        Signal::ReasmFails,
        Signal::NeighFull,
        Signal::TcpRtt,
    ];

    pub fn better(self) -> Better {
        match self {
            Signal::RxBytes | Signal::TxBytes => Better::Higher,
            _ => Better::Lower,
        }
    }

    /// What it counts, for log lines.
    pub fn describe(self) -> &'static str {
        match self {
            Signal::UdpDrops => "UDP receive errors (RcvbufErrors+MemErrors)",
            Signal::RxBytes => "bytes received (IpExt InOctets)",
            Signal::TxBytes => "bytes sent (IpExt OutOctets)",
            Signal::TcpMemPressure => "TCP memory pressure episodes (TCPMemoryPressures)",
            Signal::ListenDrops => "listen drops (ListenDrops)",
            Signal::BacklogDrops => "backlog drops (softnet_stat dropped)",
            Signal::TimeSqueeze => "NAPI budget squeezes (softnet_stat time_squeeze)",
            Signal::ReasmFails => "reassembly failures (ReasmFails)",
            Signal::NeighFull => "neighbour table overflows (table_fulls)",
            Signal::TcpRtt => "RTT of active TCP sockets (sock_diag)",
        }
    }

    /// A short name, for the summary and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Signal::UdpDrops => "udp_drops",
            Signal::RxBytes => "rx_bytes",
            Signal::TxBytes => "tx_bytes",
            Signal::TcpMemPressure => "tcp_mem_pressure",
            Signal::ListenDrops => "listen_drops",
            Signal::BacklogDrops => "backlog_drops",
            Signal::TimeSqueeze => "time_squeeze",
            Signal::ReasmFails => "reasm_fails",
            Signal::NeighFull => "neigh_table_full",
            Signal::TcpRtt => "tcp_rtt",
        }
    }

    /// Judged by its median over a window, not by a rate.
    pub fn is_gauge(self) -> bool {
        self == Signal::TcpRtt
    }

    /// Its position in [`Signal::ALL`] (declaration order; a test checks).
    fn index(self) -> usize {
        self as usize
    }

    /// Its bit in a [`SignalSet`].
    pub fn bit(self) -> SignalSet {
        1 << self.index()
    }

    /// Which of [`FILES`] its counters come from (by index).
    fn files(self) -> &'static [usize] {
        match self {
            Signal::UdpDrops | Signal::ReasmFails => &[0, 2],
            Signal::RxBytes | Signal::TxBytes | Signal::TcpMemPressure | Signal::ListenDrops => &[1],
            Signal::BacklogDrops | Signal::TimeSqueeze => &[3],
            Signal::NeighFull => &[4, 5],
            Signal::TcpRtt => &[],
        }
    }
}

/// A set of [`Signal`]s, one bit each: what a namespace is sampled for.
pub type SignalSet = u16;

/// Which of [`FILES`] to read for these signals.
pub fn files_for(set: SignalSet) -> [bool; 6] {
    let mut need = [false; 6];
    for s in Signal::ALL.iter().filter(|s| set & s.bit() != 0) {
        for &i in s.files() {
            need[i] = true;
        }
    }
    need
}

/// Whether these signals need a `sock_diag` dump ([`crate::sock_rtt`]).
pub fn needs_sock_diag(set: SignalSet) -> bool {
    set & Signal::TcpRtt.bit() != 0
}

/// The signals (and guards) any of these scenarios of any of these
/// tunables is judged by (a tuner's: its events keep their namespace
/// sampled for them).
pub fn signals_of<'a>(scenarios: impl Iterator<Item = &'a str> + Clone, tunables: &[&str]) -> SignalSet {
    let mut set = 0;
    for sc in scenarios {
        for t in tunables {
            if let Some(sig) = signal_for(sc, t) {
                set |= sig.bit();
            }
            if let Some(g) = guard_for(sc, t) {
                set |= g.bit();
            }
        }
    }
    set
}

/// The signal a change in this scenario (by its name, the original's
/// strings) of this tunable means to improve; `None` for scenarios that
/// are not judged: decreases and settings made for memory or latency
/// (their aim is not a counter), congestion control (judged per
/// destination by tcp_conn itself), and time-wait reuse (a failed port
/// search has no counter).
pub fn signal_for(scenario: &str, tunable: &str) -> Option<Signal> {
    Some(match scenario {
        "need to increase TCP buffer size(s)" if tunable == "net.ipv4.tcp_rmem" => Signal::RxBytes,
        "need to increase TCP buffer size(s)" if tunable == "net.ipv4.tcp_wmem" => Signal::TxBytes,
        "approaching TCP memory pressure" | "approaching TCP memory exhaustion" => Signal::TcpMemPressure,
        "increase maximum syn backlog under load since syncookies are disabled"
        | "enable syncookies as furthern SYN backlog increases do not help" => Signal::ListenDrops,
        "need to increase UDP buffer size(s)"
        | "approaching UDP memory pressure"
        | "approaching UDP memory exhaustion" => Signal::UdpDrops,
        "need to increase max backlog size" | "need to set per-cpu bitmap value" => Signal::BacklogDrops,
        "need to increase # of packets processed per NAPI poll" => Signal::TimeSqueeze,
        "need to increase IP fragmentation high threshold" => Signal::ReasmFails,
        "neighbour table nearly full" => Signal::NeighFull,
        _ => return None,
    })
}

/// The gauge that must not get worse while the signal of this scenario
/// does not improve: a TCP buffer raise that moves no more bytes but
/// lets queues hold more (higher RTT) only added latency.
pub fn guard_for(scenario: &str, tunable: &str) -> Option<Signal> {
    match scenario {
        "need to increase TCP buffer size(s)" if matches!(tunable, "net.ipv4.tcp_rmem" | "net.ipv4.tcp_wmem") => {
            Some(Signal::TcpRtt)
        }
        _ => None,
    }
}

/// The `/proc/net` files the counters come from, relative to a
/// namespace's `/proc/.../net`.
pub const FILES: [&str; 6] = ["snmp", "netstat", "snmp6", "softnet_stat", "stat/arp_cache", "stat/ndisc_cache"];

/// One reading of every signal's counters (a file that is missing leaves
/// its signals out).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    values: [Option<f64>; SIGNALS],
}

impl Counters {
    pub fn get(&self, s: Signal) -> Option<f64> {
        self.values[s.index()]
    }

    pub fn set(&mut self, s: Signal, v: f64) {
        self.values[s.index()] = Some(v);
    }

    /// Parse the contents of [`FILES`] (same order; `None` where a file
    /// could not be read).
    pub fn parse(files: &[Option<String>; 6]) -> Self {
        let [snmp, netstat, snmp6, softnet, arp, ndisc] = files;
        let mut c = Counters::default();
        let pair = |text: &Option<String>, prefix: &str, name: &str| {
            text.as_deref().and_then(|t| crate::procfs::counter(t, prefix, name)).map(|v| v as f64)
        };
        let six = |name: &str| snmp6.as_deref().and_then(|t| crate::procfs::snmp6_counter(t, name)).map(|v| v as f64);
        let sum = |parts: &[Option<f64>]| {
            let known: Vec<f64> = parts.iter().flatten().copied().collect();
            (!known.is_empty()).then(|| known.iter().sum())
        };
        let udp = sum(&[
            pair(snmp, "Udp:", "RcvbufErrors"),
            pair(snmp, "Udp:", "MemErrors"),
            six("Udp6RcvbufErrors"),
            six("Udp6MemErrors"),
        ]);
        let reasm = sum(&[pair(snmp, "Ip:", "ReasmFails"), six("Ip6ReasmFails")]);
        let pairs = [
            (Signal::UdpDrops, udp),
            (Signal::RxBytes, pair(netstat, "IpExt:", "InOctets")),
            (Signal::TxBytes, pair(netstat, "IpExt:", "OutOctets")),
            (Signal::TcpMemPressure, pair(netstat, "TcpExt:", "TCPMemoryPressures")),
            (Signal::ListenDrops, pair(netstat, "TcpExt:", "ListenDrops")),
            (Signal::BacklogDrops, softnet.as_deref().map(|t| softnet_column(t, 1))),
            (Signal::TimeSqueeze, softnet.as_deref().map(|t| softnet_column(t, 2))),
            (Signal::ReasmFails, reasm),
            (Signal::NeighFull, sum(&[arp.as_deref().and_then(table_fulls), ndisc.as_deref().and_then(table_fulls)])),
        ];
        for (s, v) in pairs {
            if let Some(v) = v {
                c.set(s, v);
            }
        }
        c
    }
}

/// The sum over CPUs of one hex column of `/proc/net/softnet_stat`.
fn softnet_column(text: &str, col: usize) -> f64 {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(col))
        .filter_map(|h| u64::from_str_radix(h, 16).ok())
        .map(|v| v as f64)
        .sum()
}

/// The sum over CPUs of `table_fulls` in `/proc/net/stat/{arp,ndisc}_cache`
/// (a header line naming the hex columns).
fn table_fulls(text: &str) -> Option<f64> {
    let mut lines = text.lines();
    let idx = lines.next()?.split_whitespace().position(|h| h == "table_fulls")?;
    Some(
        lines.filter_map(|l| l.split_whitespace().nth(idx)).filter_map(|h| u64::from_str_radix(h, 16).ok()).sum::<u64>()
            as f64,
    )
}

/// A verdict on one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Helped,
    Neutral,
    Hurt,
    Unknown,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [Verdict::Helped, Verdict::Neutral, Verdict::Hurt, Verdict::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Helped => "helped",
            Verdict::Neutral => "neutral",
            Verdict::Hurt => "hurt",
            Verdict::Unknown => "unknown",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A counter's rate over a window (for a gauge signal, `per_sec` holds
/// the gauge's median over the window).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub over: Duration,
}

impl Rate {
    /// The rate between two readings; `None` if the window is shorter than
    /// [`MIN_WINDOW`] or the counter went backwards (it was reset).
    pub fn between(t0: Instant, v0: f64, t1: Instant, v1: f64) -> Option<Rate> {
        let over = t1.saturating_duration_since(t0);
        (over >= MIN_WINDOW && v1 >= v0).then(|| Rate { per_sec: (v1 - v0) / over.as_secs_f64(), over })
    }

    /// A gauge's median over readings spanning `over` (a flow starting or
    /// ending moves one reading, not the verdict); `None` if the span is
    /// shorter than [`MIN_WINDOW`] or no reading had a value.
    pub fn median(values: &[f64], over: Duration) -> Option<Rate> {
        if over < MIN_WINDOW || values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let per_sec = if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 };
        Some(Rate { per_sec, over })
    }
}

/// Lower-is-better: at least halved helps; one and a half times and one
/// more per second hurts. Higher-is-better: a tenth more helps; a quarter
/// less hurts, but not if it fell below a tenth (the work stopped: that
/// says nothing about the change). Nothing before and after, or no
/// traffic before a higher-is-better window: unknown.
pub fn judge(better: Better, before: Option<Rate>, after: Option<Rate>) -> Verdict {
    let (Some(b), Some(a)) = (before, after) else { return Verdict::Unknown };
    let (b, a) = (b.per_sec, a.per_sec);
    match better {
        Better::Lower => {
            if b == 0.0 && a == 0.0 {
                Verdict::Unknown
            } else if a <= b * 0.5 {
                Verdict::Helped
            } else if a >= b * 1.5 + 1.0 {
                Verdict::Hurt
            } else {
                Verdict::Neutral
            }
        }
        Better::Higher => {
            if b <= 0.0 || a < b * 0.1 {
                Verdict::Unknown
            } else if a >= b * 1.1 {
                Verdict::Helped
            } else if a <= b * 0.75 {
                Verdict::Hurt
            } else {
                Verdict::Neutral
            }
        }
    }
}

/// A gauge guard's verdict: [`GUARD_RATIO`] and [`GUARD_MIN_DELTA`] worse
/// hurts, as much better helps.
pub fn judge_guard(before: Option<Rate>, after: Option<Rate>) -> Verdict {
    let (Some(b), Some(a)) = (before, after) else { return Verdict::Unknown };
    let (b, a) = (b.per_sec, a.per_sec);
    if a >= b * GUARD_RATIO && a >= b + GUARD_MIN_DELTA {
        Verdict::Hurt
    } else if a * GUARD_RATIO <= b && a + GUARD_MIN_DELTA <= b {
        Verdict::Helped
    } else {
        Verdict::Neutral
    }
}

/// The verdict on a change from its signal's and its guard's: what the
/// signal says, unless the signal did not improve and the guard got
/// worse (the change only added cost).
pub fn combine(signal: Verdict, guard: Option<Verdict>) -> Verdict {
    match (signal, guard) {
        (Verdict::Neutral | Verdict::Unknown, Some(Verdict::Hurt)) => Verdict::Hurt,
        (v, _) => v,
    }
}

/// A measure for log lines: "1.2 M/s over 5.0 s", or for a gauge
/// "41.0 ms over 5.0 s".
pub fn format_measure(signal: Signal, r: Option<Rate>) -> String {
    match r {
        Some(r) if signal.is_gauge() => format!("{:.1} ms over {:.1} s", r.per_sec, r.over.as_secs_f64()),
        _ => format_rate(r),
    }
}

/// A rate for log lines: "1.2 M/s".
pub fn format_rate(r: Option<Rate>) -> String {
    let Some(r) = r else { return "no window".to_string() };
    let v = r.per_sec;
    let (x, unit) = if v >= 1e9 {
        (v / 1e9, "G")
    } else if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    format!("{x:.1} {unit}/s over {:.1} s", r.over.as_secs_f64())
}

/// Which change a verdict is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChangeKey {
    pub tuner_id: u32,
    pub tunable: String,
    pub cookie: u64,
}

/// A change waiting for (or given) its verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: ChangeKey,
    pub tuner: String,
    pub scenario: String,
    pub global: bool,
    pub signal: Signal,
    pub old: String,
    pub new: String,
    pub at: Instant,
    /// The reading taken when the change was made.
    pub at_value: Option<f64>,
    /// The rate over the window before it.
    pub before: Option<Rate>,
    /// Set when the same tunable changed again in the namespace before the
    /// after-window ended: the after-window ends there.
    pub cut_at: Option<(Instant, Option<f64>)>,
    /// The gauge that must not get worse ([`guard_for`]), and its median
    /// over the window before the change.
    pub guard: Option<Signal>,
    pub guard_before: Option<Rate>,
}

/// A change and its verdict, with the numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub change: Change,
    pub after: Option<Rate>,
    /// The guard's median over the window after the change.
    pub guard_after: Option<Rate>,
    pub verdict: Verdict,
}

impl Judgement {
    /// The verdict line logged next to the change's two lines.
    pub fn log_line(&self) -> String {
        let c = &self.change;
        let ns = if c.global { String::new() } else { format!(" (netns cookie {})", c.key.cookie) };
        let guard = match c.guard {
            Some(g) => format!(
                "; {} {} before, {} after",
                g.describe(),
                format_measure(g, c.guard_before),
                format_measure(g, self.guard_after)
            ),
            None => String::new(),
        };
        format!(
            "Verdict for change {} from ({}) -> ({}){ns}: {}; {} {} before, {} after{guard}",
            c.key.tunable,
            c.old,
            c.new,
            self.verdict,
            c.signal.describe(),
            format_measure(c.signal, c.before),
            format_measure(c.signal, self.after)
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    level: u32,
}

/// Samples, pending changes and back-offs.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Per namespace: sampled until this instant (absent: not sampled),
    /// for these signals.
    active: HashMap<u64, (Instant, SignalSet)>,
    samples: HashMap<u64, VecDeque<(Instant, Counters)>>,
    pending: Vec<Change>,
    backoff: HashMap<ChangeKey, Backoff>,
    next_sample: Option<Instant>,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// An event from this namespace arrived: keep sampling it. Returns true
    /// if it was not being sampled (the caller takes a first sample now).
    pub fn note_activity(&mut self, cookie: u64, now: Instant, signals: SignalSet) -> bool {
        let fresh = self.active.get(&cookie).is_none_or(|(_, set)| set & signals != signals);
        if !self.active.contains_key(&cookie) && self.active.len() >= MAX_ACTIVE {
            if let Some(old) = self.active.iter().min_by_key(|(_, (until, _))| *until).map(|(c, _)| *c) {
                self.forget(old);
            }
        }
        let entry = self.active.entry(cookie).or_insert((now, 0));
        *entry = (now + ACTIVE_FOR, entry.1 | signals);
        if self.next_sample.is_none() {
            self.next_sample = Some(now + SAMPLE_EVERY);
        }
        fresh
    }

    /// Record a reading of the namespace's counters.
    pub fn record(&mut self, cookie: u64, at: Instant, counters: Counters) {
        let q = self.samples.entry(cookie).or_default();
        q.push_back((at, counters));
        // Enough for a window before the oldest pending change, and one.
        let keep = WINDOW + WINDOW + SAMPLE_EVERY * 2;
        while q.front().is_some_and(|(t, _)| at.saturating_duration_since(*t) > keep) {
            q.pop_front();
        }
    }

    /// The latest reading, if taken within `fresh` of `now`.
    pub fn latest(&self, cookie: u64, now: Instant, fresh: Duration) -> Option<Counters> {
        self.samples
            .get(&cookie)
            .and_then(|q| q.back())
            .filter(|(t, _)| now.saturating_duration_since(*t) <= fresh)
            .map(|(_, c)| *c)
    }

    /// The rate of `signal` over the window ending at `at` (the earliest
    /// reading at most [`WINDOW`] and half a sample before it).
    fn rate_before(&self, cookie: u64, signal: Signal, at: Instant, at_value: Option<f64>) -> Option<Rate> {
        let q = self.samples.get(&cookie)?;
        let in_window = |t: &Instant| at.saturating_duration_since(*t) <= WINDOW + SAMPLE_EVERY / 2 && *t <= at;
        if signal.is_gauge() {
            let first = q.iter().find(|(t, _)| in_window(t))?.0;
            let mut values: Vec<f64> =
                q.iter().filter(|(t, _)| in_window(t)).filter_map(|(_, c)| c.get(signal)).collect();
            values.extend(at_value);
            return Rate::median(&values, at.saturating_duration_since(first));
        }
        let v1 = at_value?;
        let (t0, c0) = q.iter().find(|(t, _)| in_window(t))?;
        Rate::between(*t0, c0.get(signal)?, at, v1)
    }

    /// A gauge's median over the readings after `at` up to `end` (and the
    /// reading taken at `end`, if the window was cut there).
    fn gauge_after(
        &self,
        cookie: u64,
        signal: Signal,
        at: Instant,
        end: Instant,
        end_value: Option<f64>,
    ) -> Option<Rate> {
        let q = self.samples.get(&cookie)?;
        let mut values: Vec<f64> =
            q.iter().filter(|(t, _)| *t > at && *t <= end).filter_map(|(_, c)| c.get(signal)).collect();
        values.extend(end_value);
        Rate::median(&values, end.saturating_duration_since(at))
    }

    /// A change was written; `counters` were read when it was made. A
    /// pending change of the same tunable in the same namespace gets its
    /// after-window cut here.
    #[allow(clippy::too_many_arguments)]
    pub fn changed(
        &mut self,
        key: ChangeKey,
        tuner: &str,
        scenario: &str,
        global: bool,
        signal: Signal,
        old: &str,
        new: &str,
        now: Instant,
        counters: Option<Counters>,
    ) {
        let at_value = counters.and_then(|c| c.get(signal));
        for p in self.pending.iter_mut().filter(|p| p.key == key && p.cut_at.is_none()) {
            p.cut_at = Some((now, counters.and_then(|c| c.get(p.signal))));
        }
        let before = self.rate_before(key.cookie, signal, now, at_value);
        let guard = guard_for(scenario, &key.tunable);
        let guard_before = guard.and_then(|g| self.rate_before(key.cookie, g, now, counters.and_then(|c| c.get(g))));
        let bits = signal.bit() | guard.map_or(0, Signal::bit);
        self.active.entry(key.cookie).or_insert((now + ACTIVE_FOR, 0)).1 |= bits;
        if self.next_sample.is_none() {
            self.next_sample = Some(now + SAMPLE_EVERY);
        }
        self.pending.push(Change {
            key,
            tuner: tuner.to_string(),
            scenario: scenario.to_string(),
            global,
            signal,
            old: old.to_string(),
            new: new.to_string(),
            at: now,
            at_value,
            before,
            cut_at: None,
            guard,
            guard_before,
        });
    }

    /// When the next sample is due (None: nothing to sample).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_sample
    }

    /// The signals a namespace is sampled for.
    pub fn signals(&self, cookie: u64) -> SignalSet {
        self.active.get(&cookie).map_or(0, |(_, set)| *set)
    }

    /// The namespaces to sample now, with their signals (and the next
    /// deadline is set), or nothing if it is not time yet.
    pub fn due(&mut self, now: Instant) -> Vec<(u64, SignalSet)> {
        match self.next_sample {
            Some(t) if now >= t => {}
            _ => return Vec::new(),
        }
        let waiting: Vec<u64> = self.pending.iter().map(|p| p.key.cookie).collect();
        self.active.retain(|c, (until, _)| now < *until || waiting.contains(c));
        let mut alive: Vec<(u64, SignalSet)> = self.active.iter().map(|(c, (_, set))| (*c, *set)).collect();
        self.samples.retain(|c, _| alive.iter().any(|(a, _)| a == c));
        self.next_sample = (!self.active.is_empty()).then(|| now + SAMPLE_EVERY);
        // The RTT guard's dumps are bounded; waiting changes first, then
        // the namespaces most recently active.
        alive.sort_by_key(|(c, _)| {
            (!waiting.contains(c), std::cmp::Reverse(self.active.get(c).map(|(until, _)| *until)))
        });
        let rtt = Signal::TcpRtt.bit();
        for (_, set) in alive.iter_mut().filter(|(_, set)| set & rtt != 0).skip(MAX_GUARD_READS) {
            *set &= !rtt;
        }
        alive
    }

    /// Judge every pending change whose after-window is over (or was cut).
    pub fn judge_due(&mut self, now: Instant) -> Vec<Judgement> {
        let (done, keep): (Vec<Change>, Vec<Change>) =
            std::mem::take(&mut self.pending).into_iter().partition(|p| p.cut_at.is_some() || now >= p.at + WINDOW);
        self.pending = keep;
        done.into_iter()
            .map(|c| {
                // The window ends where a later change cut it (with the
                // reading taken then), else at the last reading.
                let (end, cut) = match c.cut_at {
                    Some((t, v)) => (Some((t, v)), true),
                    None => (
                        self.samples
                            .get(&c.key.cookie)
                            .and_then(|q| q.iter().rev().find(|(t, _)| *t >= c.at + WINDOW - SAMPLE_EVERY / 2))
                            .map(|(t, s)| (*t, s.get(c.signal))),
                        false,
                    ),
                };
                let after = if c.signal.is_gauge() {
                    end.and_then(|(t1, v1)| self.gauge_after(c.key.cookie, c.signal, c.at, t1, v1.filter(|_| cut)))
                } else {
                    match (c.at_value, end) {
                        (Some(v0), Some((t1, Some(v1)))) => Rate::between(c.at, v0, t1, v1),
                        _ => None,
                    }
                };
                // The guard's reading at a cut is not kept: its median
                // is over the readings before the cut.
                let guard_after =
                    c.guard.zip(end).and_then(|(g, (t1, _))| self.gauge_after(c.key.cookie, g, c.at, t1, None));
                let verdict = combine(
                    judge(c.signal.better(), c.before, after),
                    c.guard.map(|_| judge_guard(c.guard_before, guard_after)),
                );
                Judgement { change: c, after, guard_after, verdict }
            })
            .collect()
    }

    /// Start (or lengthen) the back-off of a reverted change; returns how
    /// long it is.
    pub fn back_off(&mut self, key: ChangeKey, now: Instant) -> Duration {
        let level = self.backoff.get(&key).map_or(0, |b| b.level + 1);
        let d = BACKOFF_BASE.saturating_mul(1u32 << level.min(16)).min(BACKOFF_MAX);
        self.backoff.insert(key, Backoff { until: now + d, level });
        d
    }

    /// Until when a tuner backs off this tunable in this namespace.
    pub fn backing_off(&self, key: &ChangeKey, now: Instant) -> Option<Instant> {
        self.backoff.get(key).map(|b| b.until).filter(|u| now < *u)
    }

    /// Forget a namespace (gone).
    pub fn forget(&mut self, cookie: u64) {
        self.active.remove(&cookie);
        self.samples.remove(&cookie);
        self.pending.retain(|p| p.key.cookie != cookie);
        self.backoff.retain(|k, _| k.cookie != cookie);
    }

    /// Changes waiting for a verdict.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_sec: f64) -> Option<Rate> {
        Some(Rate { per_sec, over: WINDOW })
    }

    #[test]
    fn verdict_rule() {
        use Verdict::*;
        assert_eq!(judge(Better::Lower, rate(100.0), rate(10.0)), Helped);
        assert_eq!(judge(Better::Lower, rate(100.0), rate(80.0)), Neutral);
        assert_eq!(judge(Better::Lower, rate(100.0), rate(200.0)), Hurt);
        assert_eq!(judge(Better::Lower, rate(0.0), rate(0.5)), Neutral);
        assert_eq!(judge(Better::Lower, rate(0.0), rate(5.0)), Hurt);
        assert_eq!(judge(Better::Lower, rate(0.0), rate(0.0)), Unknown);
        assert_eq!(judge(Better::Lower, None, rate(0.0)), Unknown);
        assert_eq!(judge(Better::Higher, rate(1e6), rate(2e6)), Helped);
        assert_eq!(judge(Better::Higher, rate(1e6), rate(1.05e6)), Neutral);
        assert_eq!(judge(Better::Higher, rate(1e6), rate(0.5e6)), Hurt);
        // The work stopped: no verdict on the change.
        assert_eq!(judge(Better::Higher, rate(1e6), rate(1e4)), Unknown);
        assert_eq!(judge(Better::Higher, rate(0.0), rate(1e6)), Unknown);
    }

    #[test]
    fn rates_need_a_window() {
        let t = Instant::now();
        assert_eq!(Rate::between(t, 0.0, t + Duration::from_secs(1), 10.0), None);
        let r = Rate::between(t, 0.0, t + Duration::from_secs(4), 10.0).map(|r| r.per_sec);
        assert_eq!(r, Some(2.5));
        // A counter that went backwards (reset) gives nothing.
        assert_eq!(Rate::between(t, 10.0, t + Duration::from_secs(4), 0.0), None);
        // A gauge: the median, which one reading taken as a flow started
        // does not move.
        let m = |v: &[f64]| Rate::median(v, WINDOW).map(|r| r.per_sec);
        assert_eq!(m(&[41.0, 41.0, 80.0, 41.0, 42.0]), Some(41.0));
        assert_eq!(m(&[40.0, 50.0]), Some(45.0));
        assert_eq!(m(&[]), None);
        assert_eq!(Rate::median(&[1.0], Duration::from_secs(1)), None);
    }

    #[test]
    fn signal_indices_are_positions_in_all() {
        for (i, s) in Signal::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
    }

    #[test]
    fn only_the_files_a_signal_needs_are_read() {
        assert_eq!(files_for(Signal::UdpDrops.bit()), [true, false, true, false, false, false]);
        assert_eq!(files_for(Signal::RxBytes.bit() | Signal::TxBytes.bit()), [false, true, false, false, false, false]);
        assert_eq!(files_for(0), [false; 6]);
        let set = signals_of(
            ["need to increase UDP buffer size(s)", "need to decrease UDP buffer size(s)"].into_iter(),
            &["net.core.rmem_max"],
        );
        assert_eq!(set, Signal::UdpDrops.bit());
    }

    #[test]
    fn scenarios_map_to_signals() {
        assert_eq!(signal_for("need to increase TCP buffer size(s)", "net.ipv4.tcp_rmem"), Some(Signal::RxBytes));
        assert_eq!(signal_for("need to increase TCP buffer size(s)", "net.ipv4.tcp_wmem"), Some(Signal::TxBytes));
        assert_eq!(signal_for("need to decrease TCP buffer size due to latency", "net.ipv4.tcp_rmem"), None);
        assert_eq!(signal_for("need to increase UDP buffer size(s)", "net.core.rmem_max"), Some(Signal::UdpDrops));
        assert_eq!(signal_for("need to reuse TIME_WAIT sockets as local ports run out", "net.ipv4.tcp_tw_reuse"), None);
    }

    const SNMP: &str = "Ip: Forwarding ReasmFails\nIp: 1 7\nUdp: InDatagrams RcvbufErrors MemErrors\nUdp: 5 10 2\n";
    const NETSTAT: &str =
        "TcpExt: ListenDrops TCPMemoryPressures\nTcpExt: 3 4\nIpExt: InOctets OutOctets\nIpExt: 1000 2000\n";
    const SNMP6: &str = "Ip6ReasmFails 1\nUdp6RcvbufErrors 5\nUdp6MemErrors 0\n";
    const SOFTNET: &str = "00000010 00000002 00000003\n00000010 00000001 00000001\n";
    const ARP: &str = "entries allocs table_fulls\n00000001 00000002 00000003\n00000001 00000002 00000001\n";

    fn files() -> [Option<String>; 6] {
        [Some(SNMP.into()), Some(NETSTAT.into()), Some(SNMP6.into()), Some(SOFTNET.into()), Some(ARP.into()), None]
    }

    #[test]
    fn counters_from_proc_files() {
        let c = Counters::parse(&files());
        assert_eq!(c.get(Signal::UdpDrops), Some(17.0));
        assert_eq!(c.get(Signal::RxBytes), Some(1000.0));
        assert_eq!(c.get(Signal::TxBytes), Some(2000.0));
        assert_eq!(c.get(Signal::TcpMemPressure), Some(4.0));
        assert_eq!(c.get(Signal::ListenDrops), Some(3.0));
        assert_eq!(c.get(Signal::BacklogDrops), Some(3.0));
        assert_eq!(c.get(Signal::TimeSqueeze), Some(4.0));
        assert_eq!(c.get(Signal::ReasmFails), Some(8.0));
        assert_eq!(c.get(Signal::NeighFull), Some(4.0));
        let none = Counters::parse(&[None, None, None, None, None, None]);
        assert_eq!(none.get(Signal::UdpDrops), None);
    }

    fn counters(s: Signal, v: f64) -> Counters {
        let mut c = Counters::default();
        c.set(s, v);
        c
    }

    fn key() -> ChangeKey {
        ChangeKey { tuner_id: 1, tunable: "net.core.rmem_max".into(), cookie: 7 }
    }

    #[test]
    fn a_change_is_judged_on_the_windows_around_it() {
        let s = Signal::UdpDrops;
        let t0 = Instant::now();
        let mut tr = Tracker::new();
        assert!(tr.note_activity(7, t0, s.bit()));
        assert!(!tr.note_activity(7, t0, s.bit()));
        assert!(tr.note_activity(7, t0, Signal::RxBytes.bit()), "a new signal: sample again");
        assert_eq!(tr.signals(7), s.bit() | Signal::RxBytes.bit());
        // 100 drops/s before the change.
        for i in 0..=5u64 {
            tr.record(7, t0 + Duration::from_secs(i), counters(s, 100.0 * i as f64));
        }
        let at = t0 + Duration::from_secs(5);
        tr.changed(key(), "udp_buffer", "sc", false, s, "1", "2", at, Some(counters(s, 500.0)));
        assert_eq!(tr.pending(), 1);
        // 10 drops/s after.
        for i in 1..=5u64 {
            tr.record(7, at + Duration::from_secs(i), counters(s, 500.0 + 10.0 * i as f64));
        }
        assert!(tr.judge_due(at + Duration::from_secs(4)).is_empty());
        let j = tr.judge_due(at + Duration::from_secs(5));
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].verdict, Verdict::Helped);
        assert_eq!(j[0].change.before.map(|r| r.per_sec), Some(100.0));
        assert_eq!(j[0].after.map(|r| r.per_sec), Some(10.0));
        let line = j[0].log_line();
        assert!(
            line.starts_with("Verdict for change net.core.rmem_max from (1) -> (2) (netns cookie 7): helped; "),
            "{line}"
        );
        assert!(line.contains("100.0 /s over 5.0 s before, 10.0 /s over 5.0 s after"), "{line}");
    }

    #[test]
    fn a_change_without_a_before_window_is_unknown_and_a_second_cuts_the_first() {
        let s = Signal::UdpDrops;
        let t0 = Instant::now();
        let mut tr = Tracker::new();
        tr.note_activity(7, t0, s.bit());
        tr.record(7, t0, counters(s, 0.0));
        tr.changed(key(), "udp_buffer", "sc", false, s, "1", "2", t0, Some(counters(s, 0.0)));
        let t1 = t0 + Duration::from_secs(3);
        tr.record(7, t1, counters(s, 300.0));
        tr.changed(key(), "udp_buffer", "sc", false, s, "2", "3", t1, Some(counters(s, 300.0)));
        let j = tr.judge_due(t1);
        assert_eq!(j.len(), 1, "the first change is judged where the second cut it");
        assert_eq!(j[0].verdict, Verdict::Unknown);
        assert_eq!(j[0].after.map(|r| r.per_sec), Some(100.0));
        // The second one has the first's after-window as its before.
        for i in 1..=5u64 {
            tr.record(7, t1 + Duration::from_secs(i), counters(s, 300.0 + 300.0 * i as f64));
        }
        let j = tr.judge_due(t1 + WINDOW);
        assert_eq!(j[0].verdict, Verdict::Hurt);
    }

    #[test]
    fn guard_rule_and_how_it_combines() {
        use Verdict::*;
        // RTT in ms: a tenth and 2 ms worse hurts; both are needed.
        assert_eq!(judge_guard(rate(40.0), rate(50.0)), Hurt);
        assert_eq!(judge_guard(rate(40.0), rate(45.0)), Hurt);
        assert_eq!(judge_guard(rate(40.0), rate(43.0)), Neutral);
        assert_eq!(judge_guard(rate(1.0), rate(2.5)), Neutral, "a 1.5 ms rise is noise");
        assert_eq!(judge_guard(rate(50.0), rate(40.0)), Helped);
        assert_eq!(judge_guard(None, rate(40.0)), Unknown);
        // The signal decides unless it did not improve and the guard hurt.
        assert_eq!(combine(Helped, Some(Hurt)), Helped);
        assert_eq!(combine(Neutral, Some(Hurt)), Hurt);
        assert_eq!(combine(Unknown, Some(Hurt)), Hurt);
        assert_eq!(combine(Neutral, Some(Helped)), Neutral);
        assert_eq!(combine(Hurt, None), Hurt);
        assert_eq!(guard_for("need to increase TCP buffer size(s)", "net.ipv4.tcp_rmem"), Some(Signal::TcpRtt));
        assert_eq!(guard_for("need to increase UDP buffer size(s)", "net.core.rmem_max"), None);
        let set = signals_of(["need to increase TCP buffer size(s)"].into_iter(), &["net.ipv4.tcp_wmem"]);
        assert_eq!(set, Signal::TxBytes.bit() | Signal::TcpRtt.bit());
        assert!(needs_sock_diag(set));
        assert_eq!(files_for(Signal::TcpRtt.bit()), [false; 6], "the RTT is not in a /proc file");
    }

    fn bytes_and_rtt(bytes: f64, rtt: f64) -> Counters {
        let mut c = counters(Signal::RxBytes, bytes);
        c.set(Signal::TcpRtt, rtt);
        c
    }

    /// A receive-buffer raise on a capped path: the same bytes per second,
    /// the data waiting longer. Judged by the guard; with more bytes it
    /// helps whatever the RTT.
    #[test]
    fn a_raise_that_only_adds_latency_hurts() {
        for (after_rate, want) in [(2e6, Verdict::Hurt), (3e6, Verdict::Helped)] {
            let t0 = Instant::now();
            let mut tr = Tracker::new();
            let key = ChangeKey { tuner_id: 1, tunable: "net.ipv4.tcp_rmem".into(), cookie: 7 };
            let scenario = "need to increase TCP buffer size(s)";
            tr.note_activity(7, t0, Signal::RxBytes.bit() | Signal::TcpRtt.bit());
            for i in 0..=5u64 {
                tr.record(7, t0 + Duration::from_secs(i), bytes_and_rtt(2e6 * i as f64, 41.0));
            }
            let at = t0 + Duration::from_secs(5);
            let c = bytes_and_rtt(10e6, 41.0);
            tr.changed(key, "tcp_buffer", scenario, false, Signal::RxBytes, "a", "b", at, Some(c));
            for i in 1..=5u64 {
                tr.record(7, at + Duration::from_secs(i), bytes_and_rtt(10e6 + after_rate * i as f64, 51.0));
            }
            let j = tr.judge_due(at + WINDOW);
            assert_eq!(j[0].verdict, want, "{}", j[0].log_line());
            assert_eq!(j[0].change.guard_before.map(|r| r.per_sec), Some(41.0));
            assert_eq!(j[0].guard_after.map(|r| r.per_sec), Some(51.0));
            let line = j[0].log_line();
            assert!(
                line.ends_with(
                    "; RTT of active TCP sockets (sock_diag) 41.0 ms over 5.0 s before, 51.0 ms over 5.0 s after"
                ),
                "{line}"
            );
        }
    }

    #[test]
    fn back_off_doubles_and_is_per_key() {
        let t = Instant::now();
        let mut tr = Tracker::new();
        assert_eq!(tr.back_off(key(), t), BACKOFF_BASE);
        assert!(tr.backing_off(&key(), t + BACKOFF_BASE / 2).is_some());
        assert!(tr.backing_off(&key(), t + BACKOFF_BASE).is_none());
        assert_eq!(tr.back_off(key(), t), BACKOFF_BASE * 2);
        let other = ChangeKey { cookie: 8, ..key() };
        assert!(tr.backing_off(&other, t).is_none());
        for _ in 0..20 {
            tr.back_off(key(), t);
        }
        assert_eq!(tr.back_off(key(), t), BACKOFF_MAX);
        tr.forget(7);
        assert!(tr.backing_off(&key(), t).is_none());
    }

    #[test]
    fn rtt_reads_are_bounded_per_tick_waiting_changes_first() {
        let t = Instant::now();
        let mut tr = Tracker::new();
        let both = Signal::RxBytes.bit() | Signal::TcpRtt.bit();
        let n = MAX_GUARD_READS as u64 + 4;
        for c in 1..=n {
            tr.note_activity(c, t, both);
        }
        // The last namespace has a change waiting for its verdict.
        let key = ChangeKey { tuner_id: 1, tunable: "net.ipv4.tcp_rmem".into(), cookie: n };
        tr.changed(key, "tcp_buffer", "need to increase TCP buffer size(s)", false, Signal::RxBytes, "a", "b", t, None);
        let due = tr.due(t + SAMPLE_EVERY);
        assert_eq!(due.len(), n as usize, "every namespace's counters are still read");
        assert_eq!(due[0], (n, both), "the waiting change's namespace first, with its guard");
        assert_eq!(due.iter().filter(|(_, s)| s & Signal::TcpRtt.bit() != 0).count(), MAX_GUARD_READS);
        assert!(due.iter().all(|(_, s)| s & Signal::RxBytes.bit() != 0));
    }

    #[test]
    fn sampling_stops_when_the_namespace_goes_quiet() {
        let t = Instant::now();
        let mut tr = Tracker::new();
        assert_eq!(tr.next_deadline(), None);
        tr.note_activity(7, t, Signal::UdpDrops.bit());
        assert!(tr.due(t).is_empty(), "not yet");
        assert_eq!(tr.due(t + SAMPLE_EVERY), vec![(7, Signal::UdpDrops.bit())]);
        assert_eq!(tr.due(t + ACTIVE_FOR + SAMPLE_EVERY * 2), Vec::new());
        assert_eq!(tr.next_deadline(), None);
    }
}
