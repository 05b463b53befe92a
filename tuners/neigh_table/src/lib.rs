//! The neigh_table tuner: grows the ARP (`arp_cache`) and NDISC
//! (`ndisc_cache`) neighbour tables' gc_thresh1/2/3 when a table is nearly
//! full, and shrinks them back towards the kernel defaults when it is
//! nearly empty.
//!
//! BPF (`src/bpf/neigh_table.bpf.c`) watches neighbours being created and
//! released; every decision is a pure function in [`policy`]. The change is
//! made through the daemon's sysctl writer on the initial namespace's
//! `net.ipv{4,6}.neigh.default.gc_thresh1/2/3`: those sysctls *are* the
//! table-wide thresholds (the same fields `RTM_SETNEIGHTBL` without a
//! device sets; the tables are shared by all namespaces), and going through
//! the writer makes every change logged, journaled (so `-R` restores it),
//! advice only in advise mode, and skipped once an administrator took a
//! threshold over. Unlike the original: changes are rate-limited per table,
//! growth is bounded by what the addresses of the event's device justify,
//! read in that device's own namespace ([`devaddrs`], over [`netlink`]) or a
//! fixed ceiling, no foreign ifindex is ever used, and a table first seen on
//! a removal never gets thresh3 = 0.

pub mod devaddrs;
pub mod netlink;
pub mod policy;
pub mod tables;

use std::collections::HashSet;
use std::time::Instant;

use bpftune_sdk::change_reason;
use bpftune_sdk::{Event, LearningRate, WriteOutcome, prepare_object, read_plain};
use bpftune_sdk::{Host, OwnedSkel, Tuner};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};

use devaddrs::DevAddrs;
use policy::{Bound, Decision};
use tables::{Scenario, Table, Tunable};

bpftune_sdk::include_skeleton!(mod skel = "neigh_table");
bpftune_sdk::skel_family!(BpfSkel = skel::NeighTableSkel);

/// What BPF reported about a table (`struct neigh_table_event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighEvent {
    pub entries: i64,
    pub gc_entries: i64,
    pub thresh: [i64; 3],
    pub family: u32,
    pub ifindex: i32,
    pub dev: String,
}

// The event payload is integers and a char array only (neigh_table.bpf.c).
bpftune_sdk::plain!(skel::types::neigh_table_event);

fn decode(event: &Event) -> Option<NeighEvent> {
    let raw = event.raw_data();
    let e = read_plain::<skel::types::neigh_table_event>(&raw)?;
    let name: Vec<u8> = e.dev.iter().map(|c| c.to_ne_bytes()[0]).take_while(|&b| b != 0).collect();
    Some(NeighEvent {
        entries: e.entries,
        gc_entries: e.gc_entries,
        thresh: [e.thresh1, e.thresh2, e.thresh3],
        family: e.family,
        ifindex: e.ifindex,
        dev: String::from_utf8_lossy(&name).into_owned(),
    })
}

/// The loaded tuner. Nothing here is kept per namespace (the tables and
/// their thresholds are shared by all namespaces, and [`DevAddrs`] keeps
/// nothing between dumps), so it lists no [`Tuner::netns_state`].
pub struct NeighTableTuner {
    host: Host,
    lr: LearningRate,
    tables: policy::Tables,
    /// Tables this tuner stopped changing (an administrator took over).
    given_up: HashSet<Table>,
    addrs: DevAddrs,
    // Dropped last: the BPF object (its links live in the skeleton).
    skel: OwnedSkel<BpfSkel>,
}

impl NeighTableTuner {
    /// The table's current gc_thresh1/2/3 (global sysctls: the same values
    /// `RTM_SETNEIGHTBL` changes).
    fn thresholds(&self, table: Table) -> Option<[i64; 3]> {
        let mut out = [0i64; 3];
        for (v, t) in out.iter_mut().zip(table.thresh_tunables()) {
            match self.host.sysctl_read(0, t.name()) {
                Ok(vals) => *v = *vals.first()?,
                Err(e) => {
                    self.host.debug_log(&format!("neigh_table: {e}"));
                    return None;
                }
            }
        }
        Some(out)
    }

    fn give_up(&mut self, table: Table, why: &str) {
        if self.given_up.insert(table) {
            self.host.notice(&format!(
                "neigh_table: not changing the thresholds of table '{}' any more: {why}",
                table.name()
            ));
        }
    }

    /// Set the thresholds through the daemon's sysctl writer, gc_thresh3
    /// with the original's reason line, thresh1/2 with the usual one. The
    /// order keeps thresh1 <= thresh2 <= thresh3 after every write: growing
    /// starts with thresh3, shrinking with thresh1.
    fn apply(&mut self, table: Table, scenario: Scenario, cur: [i64; 3], new: [i64; 3], reason: &str, now: Instant) {
        self.tables.acted(table, now);
        let tunables = table.thresh_tunables();
        let order = if new[2] >= cur[2] { [2, 1, 0] } else { [0, 1, 2] };
        let why = match scenario {
            Scenario::NearlyEmpty => "neighbour table nearly empty",
            _ => "neighbour table nearly full",
        };
        let mut now_set = cur;
        let mut advised = false;
        for i in order {
            if new[i] == cur[i] {
                continue;
            }
            let t = tunables[i];
            let line = if i == 2 { reason.to_string() } else { change_reason(why, t.name(), "", &[cur[i]], &[new[i]]) };
            match self.host.write(t, scenario, 0, &[new[i]], &line) {
                Ok(WriteOutcome::Written | WriteOutcome::Unchanged) => now_set[i] = new[i],
                Ok(WriteOutcome::Advised) => advised = true,
                Ok(WriteOutcome::SkippedManual | WriteOutcome::NetnsGone) => {
                    for t in [Table::Arp, Table::Ndisc] {
                        self.give_up(t, "an administrator changed a neighbour table sysctl");
                    }
                    break;
                }
                Err(e) => {
                    self.host.error(&format!("could not change neightbl for {} : {e}", table.name()));
                    break;
                }
            }
        }
        // What the table holds now (in advise mode: still `cur`), so a
        // later event can tell a change made by someone else.
        if !advised {
            self.tables.changed(table, now_set, now);
        }
    }

    /// The most thresh3 should grow to, from the addresses of the event's
    /// device (in its own namespace), or the fixed ceiling.
    fn bound(&mut self, table: Table, ev: &NeighEvent, cookie: u64, inum: u32) -> Bound {
        let (Ok(ifindex), Ok(family)) = (u32::try_from(ev.ifindex), u8::try_from(table.family())) else {
            return Bound::fallback();
        };
        match self.addrs.prefixlens(&self.host, cookie, inum, family, ifindex) {
            Ok(prefixlens) => {
                let bytes = table.addr_bits() / 8;
                for &p in &prefixlens {
                    let n = policy::addr_max(table.addr_bits(), p);
                    self.host.debug_log(&format!("computed max addrs of {n} given addrlen {bytes}, prefixlen {p}"));
                }
                let b = Bound::from_prefixlens(table, &prefixlens);
                if b.fallback {
                    self.host.debug_log(&format!(
                        "{}: no address on '{}'(ifindex {}); using the fixed maximum of {}",
                        table.name(),
                        ev.dev,
                        ev.ifindex,
                        b.max
                    ));
                } else {
                    self.host.debug_log(&format!(
                        "{}: computed max tbl size of {} for '{}'(ifindex {}) based on {} addresses",
                        table.name(),
                        b.max,
                        ev.dev,
                        ev.ifindex,
                        b.naddrs
                    ));
                }
                b
            }
            Err(e) => {
                let b = Bound::fallback();
                self.host.debug_log(&format!(
                    "{}: could not read the addresses of '{}'(ifindex {}, netns cookie {cookie}): {e}; using the fixed maximum of {}",
                    table.name(),
                    ev.dev,
                    ev.ifindex,
                    b.max
                ));
                b
            }
        }
    }

    fn on_nearly_full(&mut self, table: Table, ev: &NeighEvent, event: &Event, cur: [i64; 3], now: Instant) {
        if !self.lr.nearly_full(ev.entries, cur[2]) {
            // A change landed since BPF looked: no need to look at addresses.
            self.host.debug_log(&format!(
                "neigh_table: '{}' no longer nearly full (entries {}, thresholds {cur:?})",
                table.name(),
                ev.entries
            ));
            return;
        }
        let bound = self.bound(table, ev, event.netns_cookie(), event.netns_inum());
        match policy::grow(self.lr, cur, ev.entries, bound.max) {
            Decision::Change(new) => {
                let reason = tables::grow_reason(table, &ev.dev, ev.ifindex, cur, new);
                self.apply(table, Scenario::NearlyFull, cur, new, &reason, now);
            }
            Decision::AtBound => {
                if self.tables.report_bound(table, bound.max, cur[2], now) {
                    let reason = tables::bound_reason(table, &ev.dev, ev.ifindex, bound.max, bound.naddrs, cur);
                    if self.host.update(table.tunable(), Scenario::GrownExcessively, 0, &reason)
                        == WriteOutcome::SkippedManual
                    {
                        self.give_up(table, "an administrator changed a neighbour table sysctl");
                    }
                }
            }
            Decision::Hold(why) => self.host.debug_log(&format!(
                "neigh_table: not growing '{}' (entries {}, thresholds {cur:?}): {why:?}",
                table.name(),
                ev.entries
            )),
        }
    }

    fn on_nearly_empty(&mut self, table: Table, ev: &NeighEvent, cur: [i64; 3], now: Instant) {
        match policy::shrink(self.lr, cur, ev.entries) {
            Decision::Change(new) => {
                let reason = tables::shrink_reason(table, cur, new);
                self.apply(table, Scenario::NearlyEmpty, cur, new, &reason, now);
            }
            Decision::AtBound | Decision::Hold(_) => self.host.debug_log(&format!(
                "neigh_table: not shrinking '{}' (entries {}, thresholds {cur:?})",
                table.name(),
                ev.entries
            )),
        }
    }
}

impl Tuner for NeighTableTuner {
    const NAME: &'static str = "neigh_table";
    const TUNABLES: &'static [bpftune_sdk::abi::TunableDesc] = Tunable::TABLE;
    const SCENARIOS: &'static [bpftune_sdk::abi::ScenarioDesc] = Scenario::TABLE;

    fn init(host: Host) -> Result<Self, String> {
        let mut skel = OwnedSkel::<BpfSkel>::new(|storage| {
            let mut open = skel::NeighTableSkelBuilder::default().open(storage).map_err(|e| format!("open: {e}"))?;
            prepare_object!(open, host)?;
            open.load().map_err(|e| format!("BPF load for tuner 'neigh_table' failed: {e}"))
        })?;
        skel.with_mut(|s| s.attach()).map_err(|e| format!("could not attach skeleton: {e}"))?;
        Ok(Self {
            host,
            lr: host.learning_rate(),
            tables: policy::Tables::default(),
            given_up: HashSet::new(),
            addrs: DevAddrs::new(host.global_netns_cookie()),
            skel,
        })
    }

    fn event(&mut self, event: &Event) -> Result<(), String> {
        let Some(ev) = decode(event) else {
            self.host.debug_log("neigh_table: got unexpected event");
            return Ok(());
        };
        let Some(table) = Table::from_family(ev.family) else { return Ok(()) };
        if self.given_up.contains(&table) {
            return Ok(());
        }
        let now = Instant::now();
        if !self.tables.may_act(table, now) {
            return Ok(());
        }
        let Some(cur) = self.thresholds(table) else { return Ok(()) };
        if self.tables.changed_elsewhere(table, cur) {
            self.give_up(table, &format!("they were changed outside bpftune (now {} {} {})", cur[0], cur[1], cur[2]));
            return Ok(());
        }
        match Scenario::from_id(event.scenario_id()) {
            Some(Scenario::NearlyFull) => self.on_nearly_full(table, &ev, event, cur, now),
            Some(Scenario::NearlyEmpty) => self.on_nearly_empty(table, &ev, cur, now),
            _ => self.host.debug_log(&format!("neigh_table: unexpected scenario {}", event.scenario_id())),
        }
        Ok(())
    }

    /// The thresholds are global (the daemon's namespace): only a hand-back
    /// there (`bpftune -q release net.ipv4.neigh.default.gc_thresh3`)
    /// concerns this tuner, which then acts on the tables again.
    fn netns_released(&mut self, cookie: u64) {
        if cookie == self.host.global_netns_cookie() && !self.given_up.is_empty() {
            self.given_up.clear();
            self.host.notice("neigh_table: handed back; changing neighbour table thresholds again");
        }
    }

    fn fini(&mut self) -> Result<(), String> {
        // Links are dropped with the skeleton. The thresholds are sysctl
        // writes: `-R` restores them with every other tunable.
        let _ = &self.skel;
        Ok(())
    }
}

bpftune_sdk::export_tuner!(NeighTableTuner);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_bpf_event() {
        let mut raw = skel::types::neigh_table_event {
            entries: 250,
            gc_entries: 3,
            thresh1: 32,
            thresh2: 64,
            thresh3: 128,
            family: tables::FAMILY_INET,
            ifindex: 7,
            ..Default::default()
        };
        for (d, s) in raw.dev.iter_mut().zip(b"veth0") {
            *d = i8::from_ne_bytes([*s]);
        }
        // SAFETY: the generated type is plain old data; viewing it as bytes
        // for the length of the type is valid.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const skel::types::neigh_table_event).cast::<u8>(),
                std::mem::size_of_val(&raw),
            )
        };
        assert!(bytes.len() <= 128, "the event must fit in raw_data");
        let mut event = Event::new(1, Scenario::NearlyFull as u32, 4096, 1);
        event.set_raw_data(bytes);
        let ev = decode(&event).expect("decode");
        assert_eq!(
            ev,
            NeighEvent {
                entries: 250,
                gc_entries: 3,
                thresh: [32, 64, 128],
                family: 2,
                ifindex: 7,
                dev: "veth0".to_string()
            }
        );
    }
}
