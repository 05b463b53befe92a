//! The netns tuner: keeps the daemon's view of network namespaces current,
//! so every other tuner can act per namespace without leaking state.
//!
//! * New namespaces: its BPF program reports a namespace the first time a
//!   TCP socket in it connects or listens (with the cookie, inode and pid,
//!   so a handle is found at once); a namespace without TCP is found by the
//!   rescan below, and one seen in another tuner's event is resolved then.
//! * Dead namespaces: every tick (1 s) the daemon rescans if `/run/netns`
//!   changed (inotify), and every fifth tick it walks every nsfs mount and
//!   `/proc/<pid>/ns/net` regardless; a namespace no process or mount holds
//!   any more is destroyed: its state, in every tuner, is released.
//!
//! Each change is logged with the scenario lines `netns created` /
//! `netns destroyed` (tunable `network_namespace`; nothing is written).
//! Without netns cookies (before 5.14) there is nothing to track: the tuner
//! loads no BPF, says so once (and in `bpftune -S`), and policy stays
//! global-only.

use bpftune_sdk::abi::{FeatureState, NetnsChange, NetnsChangeKind, NetnsScan};
use bpftune_sdk::netns::SHORT_LIVED_NETNS_COOKIE;
use bpftune_sdk::{Event, prepare_object};
use bpftune_sdk::{Host, OwnedSkel, Tuner};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore};

bpftune_sdk::include_skeleton!(mod skel = "netns");
bpftune_sdk::skel_family!(BpfSkel = skel::NetnsSkel);

bpftune_sdk::tunables! {
    pub enum Tunable {
        NetworkNamespace = ("network_namespace", Other, NAMESPACED, 0),
    }
}

bpftune_sdk::scenarios! {
    pub enum Scenario {
        Created = ("netns created", "network namespace creation"),
        Destroyed = ("netns destroyed", "network namespace destruction"),
    }
}

/// Milliseconds between ticks.
pub const TICK_MS: u32 = 1000;
/// Every this many ticks, a full scan even if `/run/netns` did not change
/// (namespaces held only by processes: containers, `unshare -n`).
pub const FULL_SCAN_EVERY: u32 = 5;

/// Which scan each tick asks for.
#[derive(Debug, Default, Clone, Copy)]
pub struct Schedule {
    ticks: u32,
}

impl Schedule {
    pub fn next_scan(&mut self) -> NetnsScan {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks % FULL_SCAN_EVERY == 0 { NetnsScan::Full } else { NetnsScan::IfChanged }
    }
}

/// The reason line logged after the scenario line, or None for changes
/// that are not news (namespaces found at start-up are only debug-logged).
pub fn reason(change: &NetnsChange) -> Option<(Scenario, String)> {
    let cookie = change.cookie;
    if cookie == SHORT_LIVED_NETNS_COOKIE {
        return match change.kind {
            NetnsChangeKind::Created => Some((
                Scenario::Created,
                "a netns was made in /run/netns and removed before it could be looked at".to_string(),
            )),
            NetnsChangeKind::Destroyed => {
                Some((Scenario::Destroyed, "that short-lived netns is gone; nothing was kept for it".to_string()))
            }
            NetnsChangeKind::Found => None,
        };
    }
    match change.kind {
        NetnsChangeKind::Created => {
            Some((Scenario::Created, format!("netns (cookie {cookie}) is new: it will be tuned on its own")))
        }
        NetnsChangeKind::Destroyed => Some((
            Scenario::Destroyed,
            format!("netns (cookie {cookie}) is gone: its state in every tuner was released"),
        )),
        NetnsChangeKind::Found => None,
    }
}

/// The loaded tuner: the BPF object and its tracepoint link.
pub struct NetnsTuner {
    host: Host,
    schedule: Schedule,
    /// The BPF object and its link; `None` without netns cookies.
    bpf: Option<Bpf>,
}

/// The tracepoint program and its link (dropped link first).
struct Bpf {
    _link: Link,
    skel: OwnedSkel<BpfSkel>,
}

impl NetnsTuner {
    fn report(&mut self, changes: Vec<NetnsChange>) {
        for change in changes {
            if let (NetnsChangeKind::Destroyed, Some(bpf)) = (change.kind, self.bpf.as_ref()) {
                // Tidy the BPF side too (the LRU would evict it eventually).
                let _ = bpf.skel.get().maps.netns_seen_map.delete(&change.cookie.to_ne_bytes());
            }
            if let Some((scenario, why)) = reason(&change) {
                self.host.update(Tunable::NetworkNamespace, scenario, change.cookie, &why);
            }
        }
    }
}

impl Tuner for NetnsTuner {
    const NAME: &'static str = "netns";
    const TUNABLES: &'static [bpftune_sdk::abi::TunableDesc] = Tunable::TABLE;
    const SCENARIOS: &'static [bpftune_sdk::abi::ScenarioDesc] = Scenario::TABLE;
    const TICK_MS: u32 = TICK_MS;

    fn init(host: Host) -> Result<Self, String> {
        if !host.netns_cookie_supported() {
            host.feature(
                "namespaces",
                FeatureState::Off,
                "netns cookies are not supported by this kernel (5.14+): policy stays global-only",
            );
            return Ok(Self { host, schedule: Schedule::default(), bpf: None });
        }
        host.feature("namespaces", FeatureState::Active, "");
        let global = host.global_netns_cookie();
        let skel = OwnedSkel::<BpfSkel>::new(|storage| {
            let mut open = skel::NetnsSkelBuilder::default().open(storage).map_err(|e| format!("open: {e}"))?;
            prepare_object!(open, host)?;
            if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
                rodata.global_netns_cookie = global;
            }
            open.load().map_err(|e| format!("load: {e}"))
        })?;
        let link = skel
            .get()
            .progs
            .bpftune_netns_first_socket
            .attach()
            .map_err(|e| format!("cannot attach tp_btf/inet_sock_set_state: {e}"))?;
        let mut tuner = Self { host, schedule: Schedule::default(), bpf: Some(Bpf { _link: link, skel }) };
        // Subscribe: from now on every namespace change is queued for us.
        let changes = tuner.host.netns_changes(None, NetnsScan::None);
        tuner.report(changes);
        Ok(tuner)
    }

    fn event(&mut self, event: &Event) -> Result<(), String> {
        // `pid` is the id of a thread that was in the namespace (see BPF).
        let seen = (event.netns_cookie(), event.netns_inum(), event.pid());
        let changes = self.host.netns_changes(Some(seen), NetnsScan::None);
        self.report(changes);
        Ok(())
    }

    fn tick(&mut self) -> Result<(), String> {
        if self.bpf.is_none() {
            return Ok(());
        }
        let scan = self.schedule.next_scan();
        let changes = self.host.netns_changes(None, scan);
        self.report(changes);
        Ok(())
    }
}

bpftune_sdk::export_tuner!(NetnsTuner);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_match_the_reference() {
        assert_eq!(Tunable::NetworkNamespace as u32, 0);
        let t = &Tunable::TABLE[0];
        assert_eq!(t.name.as_str(), "network_namespace");
        assert_eq!(t.kind, bpftune_sdk::abi::TunableKind::Other);
        assert!(t.flags.contains(bpftune_sdk::abi::TunableFlags::NAMESPACED));
        assert_eq!(t.num_values, 0);
        assert_eq!(Scenario::Created.name(), "netns created");
        assert_eq!(Scenario::Destroyed.name(), "netns destroyed");
        assert_eq!(Scenario::TABLE[1].description.as_str(), "network namespace destruction");
    }

    #[test]
    fn every_fifth_tick_is_a_full_scan() {
        let mut s = Schedule::default();
        let kinds: Vec<NetnsScan> = (0..10).map(|_| s.next_scan()).collect();
        assert_eq!(kinds.iter().filter(|k| **k == NetnsScan::Full).count(), 2);
        assert_eq!(kinds[4], NetnsScan::Full);
        assert_eq!(kinds[0], NetnsScan::IfChanged);
    }

    #[test]
    fn short_lived_namespaces_are_news_without_a_cookie() {
        let (s, why) =
            reason(&NetnsChange { cookie: SHORT_LIVED_NETNS_COOKIE, kind: NetnsChangeKind::Created }).expect("news");
        assert_eq!(s, Scenario::Created);
        assert!(!why.contains("cookie"), "{why}");
    }

    #[test]
    fn found_at_start_is_not_news() {
        assert!(reason(&NetnsChange { cookie: 3, kind: NetnsChangeKind::Found }).is_none());
        let (s, why) = reason(&NetnsChange { cookie: 3, kind: NetnsChangeKind::Destroyed }).expect("news");
        assert_eq!(s, Scenario::Destroyed);
        assert!(why.contains("cookie 3"));
    }
}
