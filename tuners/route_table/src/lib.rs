//! The route_table tuner: raises a network namespace's
//! `net.ipv6.route.max_size` when its IPv6 destination cache nears it, on
//! kernels where that limit still makes dst allocations (so route lookups,
//! PMTU and redirect exceptions, neighbour discovery) fail.
//!
//! Since Linux 6.3, and in stable kernels that took the CVE-2023-52340 fix
//! (Debian's 5.10 and 6.1 among them), max_size limits nothing: there the
//! tuner loads no BPF, reports `max_size` as not needed, and stays idle.
//! Where it limits, BPF (`src/bpf/route_table.bpf.c`, a sampled
//! `tp_btf/fib6_table_lookup`) reports a namespace whose folded dst count
//! nears max_size; the exact count from that namespace's
//! `/proc/net/rt6_stats` decides ([`policy::decide`]), and the daemon's
//! writer changes max_size in that namespace only, up to
//! [`policy::MAX_SIZE_CEILING`].

pub mod policy;
pub mod tables;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;

use bpftune_sdk::abi::FeatureState;
use bpftune_sdk::{Event, LearningRate, WriteOutcome, kernel, prepare_object};
use bpftune_sdk::{Host, NetnsAdmission, NetnsState, OwnedSkel, PerNetns, Tuner, UnknownNetns};
use libbpf_rs::btf::types::Struct;
use libbpf_rs::btf::{Btf, BtfKind, BtfType};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};

use policy::{Decision, Evidence, Hold, Verdict};
use tables::{Scenario, Tunable};

bpftune_sdk::include_skeleton!(mod skel = "route_table");
bpftune_sdk::skel_family!(BpfSkel = skel::RouteTableSkel);

/// The part `-S` and `-q jstatus` list.
pub const FEATURE: &str = "max_size";
/// `BPFTUNE_PRETEND_MISSING` name: act as if the kernel lacked the change
/// that made max_size limit nothing (runs the whole tuner on any kernel).
pub const PRETEND_LIMITED: &str = "ipv6_dst_unlimited";
/// `-S` detail where max_size limits nothing.
pub const NOT_NEEDED: &str = "net.ipv6.route.max_size limits nothing on this kernel (Linux 6.3, \
    or an older kernel with the CVE-2023-52340 fix); no BPF loaded";

/// Whether `struct dst_ops`'s `gc` returns void in kernel BTF: true once
/// max_size no longer bounds the cache, false while gc can refuse an
/// allocation (it returned int); None if BTF cannot tell.
pub fn dst_gc_returns_void() -> Option<bool> {
    let btf = Btf::from_vmlinux().ok()?;
    let ops: Struct<'_> = btf.type_by_name("dst_ops")?;
    let gc = ops.iter().find(|m| m.name == Some(OsStr::new("gc")))?;
    let ptr = btf.type_by_id::<BtfType<'_>>(gc.ty)?.skip_mods_and_typedefs();
    if ptr.kind() != BtfKind::Ptr {
        return None;
    }
    let proto = ptr.next_type()?.skip_mods_and_typedefs();
    if proto.kind() != BtfKind::FuncProto {
        return None;
    }
    match proto.next_type() {
        None => Some(true),
        Some(ret) => Some(ret.kind() == BtfKind::Void),
    }
}

/// The namespace inode of the daemon (to recognise its own events on
/// kernels without netns cookies).
fn own_netns_inum() -> u64 {
    std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0)
}

fn detail_for(evidence: Evidence, slack: i64) -> String {
    let how = match evidence {
        Evidence::Btf => "dst_ops.gc can refuse allocations",
        Evidence::Release => "kernel before 6.3",
        Evidence::Pretend => "treated as limiting (BPFTUNE_PRETEND_MISSING)",
    };
    format!("{how}; sampled tp_btf/fib6_table_lookup, count slack {slack}, ceiling {}", policy::MAX_SIZE_CEILING)
}

/// The BPF side, loaded only where max_size limits.
struct Watch {
    netns: NetnsAdmission,
    /// Whether the kernel has netns cookies; without them only the
    /// daemon's own namespace (inode `own_inum`) is tuned.
    cookies: bool,
    own_inum: u64,
    /// Namespaces (by inode) whose events were ignored for lack of cookies
    /// (so never released by cookie; bounded instead).
    ignored: HashSet<u32>,
    /// Last reason a namespace was held, to log changes only.
    held: PerNetns<Hold>,
    // Dropped last: the BPF object (its link lives in the skeleton).
    _skel: OwnedSkel<BpfSkel>,
}

/// What the SDK releases when a namespace goes (see
/// [`Tuner::netns_state`]): everything kept per namespace.
fn netns_states<'a>(netns: &'a mut NetnsAdmission, held: &'a mut PerNetns<Hold>) -> Vec<&'a mut dyn NetnsState> {
    vec![netns, held]
}

/// The loaded tuner.
pub struct RouteTableTuner {
    host: Host,
    lr: LearningRate,
    /// None where there is nothing to do (max_size limits nothing, or no
    /// IPv6): no BPF, no events.
    watch: Option<Watch>,
}

impl RouteTableTuner {
    fn load(host: Host, evidence: Evidence) -> Result<Watch, String> {
        let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        let slack = policy::count_slack(cpus);
        let skel = OwnedSkel::<BpfSkel>::new(|storage| {
            let mut open = skel::RouteTableSkelBuilder::default().open(storage).map_err(|e| format!("open: {e}"))?;
            if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
                rodata.dst_count_slack = slack;
            }
            prepare_object!(open, host)?;
            open.load().map_err(|e| format!("BPF load for tuner 'route_table' failed: {e}"))
        })?;
        let mut skel = skel;
        skel.with_mut(|s| s.attach()).map_err(|e| format!("could not attach skeleton: {e}"))?;
        host.feature(FEATURE, FeatureState::Active, &detail_for(evidence, slack));
        Ok(Watch {
            netns: NetnsAdmission::new(host.global_netns_cookie(), UnknownNetns::Skip),
            cookies: host.netns_cookie_supported(),
            own_inum: own_netns_inum(),
            ignored: HashSet::new(),
            held: PerNetns::new(),
            _skel: skel,
        })
    }

    /// The event's namespace, or None to ignore it. Without netns cookies
    /// (before 5.14... in practice 5.10) the daemon cannot address another
    /// namespace, so only its own is tuned.
    fn admit(&mut self, event: &Event) -> Option<u64> {
        let host = self.host;
        let w = self.watch.as_mut()?;
        if w.cookies {
            return w.netns.admit(&host, event);
        }
        let inum = event.netns_inum();
        if u64::from(inum) == w.own_inum {
            return Some(host.global_netns_cookie());
        }
        if w.ignored.len() >= 1024 {
            w.ignored.clear();
        }
        if w.ignored.insert(inum) {
            host.debug_log(&format!(
                "route_table: dst cache of netns inode {inum} nearly full; not tuned: this kernel has no netns \
                 cookies, so only the daemon's own namespace is"
            ));
        }
        None
    }

    fn ns_label(&self, cookie: u64) -> String {
        if cookie == self.host.global_netns_cookie() { "global ns".into() } else { format!("netns cookie {cookie}") }
    }

    /// The exact dst count of that namespace.
    fn exact_entries(&self, cookie: u64) -> Result<policy::Rt6Stats, String> {
        let inum = self.watch.as_ref().and_then(|w| if w.cookies { w.netns.inum(cookie) } else { None });
        let text = self.host.read_net_file(cookie, inum.unwrap_or(0), "rt6_stats")?;
        policy::parse_rt6_stats(&text).ok_or_else(|| format!("cannot parse rt6_stats: {text:?}"))
    }

    fn hold(&mut self, cookie: u64, why: Hold, entries: i64, max_size: i64) {
        let label = self.ns_label(cookie);
        let Some(w) = self.watch.as_mut() else { return };
        let before = w.held.get(cookie).copied();
        *w.held.entry_with(cookie, || why) = why;
        if before == Some(why) {
            return;
        }
        match why {
            Hold::AtCeiling => self.host.notice(&format!(
                "route_table: {} is {max_size} in {label} ({entries} dst entries); not raising it beyond {}",
                Tunable::Ipv6MaxSize.name(),
                policy::MAX_SIZE_CEILING
            )),
            Hold::NotNearlyFull => self.host.debug_log(&format!(
                "route_table: {label}: {entries} dst entries, max_size {max_size}: not nearly full"
            )),
        }
    }

    fn on_nearly_full(&mut self, cookie: u64, event_max: i64, bpf_count: i64) {
        let t = Tunable::Ipv6MaxSize;
        let max_size = match self.host.sysctl_read(cookie, t.name()) {
            Ok(v) => match v.first() {
                Some(v) => *v,
                None => return,
            },
            Err(e) => {
                self.host.debug_log(&format!("route_table: {e}"));
                return;
            }
        };
        if max_size != event_max {
            self.host.debug_log(&format!(
                "route_table: stale event ({}): saw max_size {event_max}, now {max_size}",
                self.ns_label(cookie)
            ));
            return;
        }
        let entries = match self.exact_entries(cookie) {
            Ok(s) => s.dst_entries,
            Err(e) => {
                self.host.debug_log(&format!("route_table: {e}; using the count BPF saw ({bpf_count})"));
                bpf_count
            }
        };
        match policy::decide(entries, max_size, self.lr) {
            Decision::Grow(new) => {
                if let Some(w) = self.watch.as_mut() {
                    w.held.remove(cookie);
                }
                self.write(cookie, max_size, new);
            }
            Decision::Hold(why) => self.hold(cookie, why, entries, max_size),
        }
    }

    /// Write through the daemon; stop acting in a namespace where an
    /// administrator took over or that is gone.
    fn write(&mut self, cookie: u64, old: i64, new: i64) {
        let t = Tunable::Ipv6MaxSize;
        match self.host.write(t, Scenario::NearlyFull, cookie, &[new], &tables::reason(old, new)) {
            Ok(WriteOutcome::Written | WriteOutcome::Advised | WriteOutcome::Unchanged) => {}
            Ok(WriteOutcome::SkippedManual | WriteOutcome::NetnsGone) => {
                if let Some(w) = self.watch.as_mut() {
                    w.netns.disable(cookie);
                    w.held.remove(cookie);
                }
            }
            Err(e) => self.host.error(&format!("route_table: could not change '{}': {e}", t.name())),
        }
    }
}

impl Tuner for RouteTableTuner {
    const NAME: &'static str = "route_table";
    const TUNABLES: &'static [bpftune_sdk::abi::TunableDesc] = Tunable::TABLE;
    const SCENARIOS: &'static [bpftune_sdk::abi::ScenarioDesc] = Scenario::TABLE;

    fn init(host: Host) -> Result<Self, String> {
        let lr = host.learning_rate();
        if !kernel::sysctl_exists(Tunable::Ipv6MaxSize.name()) {
            host.feature(FEATURE, FeatureState::Off, "no net.ipv6.route.max_size (IPv6 disabled); nothing to tune");
            return Ok(Self { host, lr, watch: None });
        }
        let verdict =
            policy::verdict(kernel::pretend_missing(PRETEND_LIMITED), dst_gc_returns_void(), kernel::release());
        let watch = match verdict {
            Verdict::Unlimited(_) => {
                host.feature(FEATURE, FeatureState::NotNeeded, NOT_NEEDED);
                None
            }
            Verdict::Limits(evidence) => Some(Self::load(host, evidence)?),
        };
        Ok(Self { host, lr, watch })
    }

    fn event(&mut self, event: &Event) -> Result<(), String> {
        let Some(cookie) = self.admit(event) else { return Ok(()) };
        let upd = event.update();
        match Tunable::from_id(upd.tunable) {
            Some(Tunable::Ipv6MaxSize) => self.on_nearly_full(cookie, upd.old[0], event.extra().old[0]),
            None => self.host.debug_log(&format!("route_table: unexpected event for tunable {}", upd.tunable)),
        }
        Ok(())
    }

    fn netns_state(&mut self) -> Vec<&mut dyn NetnsState> {
        match self.watch.as_mut() {
            Some(w) => netns_states(&mut w.netns, &mut w.held),
            None => Vec::new(),
        }
    }
}

bpftune_sdk::export_tuner!(RouteTableTuner);

#[cfg(test)]
mod tests {
    use super::*;
    use bpftune_sdk::testing::{self, ALIVE, GONE};

    #[test]
    fn a_released_namespace_leaves_nothing() {
        let mut held: PerNetns<Hold> = PerNetns::new();
        for cookie in [GONE, ALIVE] {
            *held.entry_with(cookie, || Hold::AtCeiling) = Hold::NotNearlyFull;
        }
        let mut held = (testing::admission(UnknownNetns::Skip), held);
        testing::assert_released_namespace_leaves_nothing(&mut held, |(netns, held)| netns_states(netns, held));
        assert_eq!(held.1.get(ALIVE), Some(&Hold::NotNearlyFull));
    }
}
