//! The event every BPF program posts to the shared ring buffer, as a Rust
//! type generated from `bpf-common/include/bpftune.bpf.h` by libbpf-cargo
//! (via the core probe object), wrapped in safe accessors.

use crate::types_skel::types::{bpftune_event, bpftune_sysctl_write, bpftune_sysctl_write_flags as WriteFlags};

/// Size in bytes of one event on the ring buffer.
pub const EVENT_SIZE: usize = std::mem::size_of::<bpftune_event>();

/// Cookie meaning "namespace unknown" (`BPFTUNE_NETNS_UNKNOWN`).
pub const NETNS_UNKNOWN: u64 = u64::MAX;

/// One sysctl change a BPF program asks for (payload slot 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SysctlUpdate {
    pub tunable: u32,
    pub old: [i64; 3],
    pub new: [i64; 3],
}

/// A sysctl write as the sysctl tuner's BPF program saw it (what the
/// kernel let it see: older kernels hide the writer's pid, namespace or
/// name from `cgroup/sysctl` programs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SysctlWrite {
    /// `net/ipv4/tcp_rmem` form.
    pub name: String,
    pub value: Option<String>,
    pub comm: Option<String>,
    pub pid_known: bool,
    pub netns_known: bool,
}

/// The text of a NUL-padded C char array.
fn c_text(chars: &[i8]) -> String {
    let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c.to_ne_bytes()[0]).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A decoded event.
#[derive(Clone, Copy)]
pub struct Event {
    raw: bpftune_event,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("tuner_id", &self.tuner_id())
            .field("scenario_id", &self.scenario_id())
            .field("netns_cookie", &self.netns_cookie())
            .field("pid", &self.pid())
            .finish()
    }
}

impl Event {
    /// Decode `bytes` if it is exactly one event.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != EVENT_SIZE {
            return None;
        }
        // SAFETY: the length matches and bpftune_event is plain old data made
        // only of integers and byte arrays, so every bit pattern is valid;
        // read_unaligned copes with the ring buffer's alignment.
        let raw = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<bpftune_event>()) };
        Some(Self { raw })
    }

    /// The raw bytes, e.g. to pass across the plugin boundary.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: bpftune_event is plain old data of EVENT_SIZE bytes with no
        // padding that could be uninitialised (explicit pad fields).
        unsafe { std::slice::from_raw_parts((&self.raw as *const bpftune_event).cast::<u8>(), EVENT_SIZE) }
    }

    /// Build an event (tests and tools).
    pub fn new(tuner_id: u32, scenario_id: u32, netns_cookie: u64, pid: i32) -> Self {
        Self { raw: bpftune_event { tuner_id, scenario_id, netns_cookie, pid, ..Default::default() } }
    }

    pub fn tuner_id(&self) -> u32 {
        self.raw.tuner_id
    }
    pub fn scenario_id(&self) -> u32 {
        self.raw.scenario_id
    }
    pub fn netns_cookie(&self) -> u64 {
        self.raw.netns_cookie
    }
    pub fn pid(&self) -> i32 {
        self.raw.pid
    }
    pub fn netns_inum(&self) -> u32 {
        self.raw.netns_inum
    }

    fn slot(&self, i: usize) -> SysctlUpdate {
        // SAFETY: every view of the payload union is plain integers/bytes,
        // so reading the update view is valid whatever was written.
        let u = unsafe { self.raw.payload.update[i] };
        SysctlUpdate { tunable: u.id, old: u.old, new: u.new }
    }

    fn set_slot(&mut self, i: usize, update: SysctlUpdate) {
        // SAFETY: as in `slot`; writing one integer view of a POD union.
        unsafe {
            self.raw.payload.update[i].id = update.tunable;
            self.raw.payload.update[i].old = update.old;
            self.raw.payload.update[i].new = update.new;
        }
    }

    /// The sysctl update in payload slot 0.
    pub fn update(&self) -> SysctlUpdate {
        self.slot(0)
    }

    /// Set the sysctl update in payload slot 0 (tests and tools).
    pub fn set_update(&mut self, update: SysctlUpdate) {
        self.set_slot(0, update);
    }

    /// Payload slot 1, where a tuner's BPF side puts the measurements it
    /// sends with the update (`update[1].old[0..3]` and `.new[0..3]`).
    pub fn extra(&self) -> SysctlUpdate {
        self.slot(1)
    }

    /// Set payload slot 1 (tests and tools), keeping slot 0.
    pub fn set_extra(&mut self, extra: SysctlUpdate) {
        self.set_slot(1, extra);
    }

    /// The string payload, up to its first NUL.
    pub fn text(&self) -> String {
        let bytes = self.raw_data();
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    }

    /// The payload as a sysctl write (events of the sysctl tuner).
    pub fn sysctl_write(&self) -> SysctlWrite {
        // SAFETY: every view of the POD union is valid for any bytes; this
        // one is 216 of the payload's 224 always-initialised bytes.
        let w: bpftune_sysctl_write = unsafe { self.raw.payload.sysctl_write };
        let has = |f: WriteFlags| w.flags & f.0 != 0;
        SysctlWrite {
            name: c_text(&w.name),
            value: has(WriteFlags::BPFTUNE_WRITE_VALUE_KNOWN).then(|| c_text(&w.value)),
            comm: has(WriteFlags::BPFTUNE_WRITE_COMM_KNOWN).then(|| c_text(&w.comm)),
            pid_known: has(WriteFlags::BPFTUNE_WRITE_PID_KNOWN),
            netns_known: has(WriteFlags::BPFTUNE_WRITE_NETNS_KNOWN),
        }
    }

    /// Set the sysctl-write payload (tests and tools).
    pub fn set_sysctl_write(&mut self, w: &SysctlWrite) {
        let mut raw = bpftune_sysctl_write::default();
        let copy = |dst: &mut [i8], text: &str| {
            let room = dst.len().saturating_sub(1);
            for (d, b) in dst.iter_mut().zip(text.bytes().take(room)) {
                *d = i8::from_ne_bytes([b]);
            }
        };
        copy(&mut raw.name, &w.name);
        let mut flags = 0;
        if let Some(v) = &w.value {
            copy(&mut raw.value, v);
            flags |= WriteFlags::BPFTUNE_WRITE_VALUE_KNOWN.0;
        }
        if let Some(c) = &w.comm {
            copy(&mut raw.comm, c);
            flags |= WriteFlags::BPFTUNE_WRITE_COMM_KNOWN.0;
        }
        if w.pid_known {
            flags |= WriteFlags::BPFTUNE_WRITE_PID_KNOWN.0;
        }
        if w.netns_known {
            flags |= WriteFlags::BPFTUNE_WRITE_NETNS_KNOWN.0;
        }
        raw.flags = flags;
        self.raw.payload.sysctl_write = raw;
    }

    /// The raw payload bytes.
    pub fn raw_data(&self) -> [u8; 128] {
        // SAFETY: the raw_data view covers bytes that are always initialised
        // (the union is at least 128 bytes of POD).
        unsafe { self.raw.payload.raw_data }
    }

    /// Set the raw payload (tests and tools).
    pub fn set_raw_data(&mut self, data: &[u8]) {
        let n = data.len().min(128);
        // SAFETY: writing bytes into a POD union view.
        unsafe { self.raw.payload.raw_data[..n].copy_from_slice(&data[..n]) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_write_round_trips() {
        let mut e = Event::new(1, 0, 7, 42);
        let w = SysctlWrite {
            name: "net/ipv4/tcp_rmem".into(),
            value: Some("4096 131072 6291456".into()),
            comm: Some("sysctl".into()),
            pid_known: true,
            netns_known: false,
        };
        e.set_sysctl_write(&w);
        let back = Event::from_bytes(e.as_bytes()).expect("event");
        assert_eq!(back.sysctl_write(), w);
        assert_eq!(back.text(), "net/ipv4/tcp_rmem");
    }

    #[test]
    fn event_is_248_bytes() {
        assert_eq!(EVENT_SIZE, 248);
    }

    #[test]
    fn round_trip() {
        let mut e = Event::new(3, 1, 42, 7);
        e.set_update(SysctlUpdate { tunable: 2, old: [1, 2, 3], new: [4, 5, 6] });
        let back = Event::from_bytes(e.as_bytes()).expect("decode");
        assert_eq!(back.tuner_id(), 3);
        assert_eq!(back.scenario_id(), 1);
        assert_eq!(back.netns_cookie(), 42);
        assert_eq!(back.pid(), 7);
        assert_eq!(back.update().new, [4, 5, 6]);
        assert!(Event::from_bytes(&[0u8; 10]).is_none());
    }

    #[test]
    fn extra_is_slot_one_and_leaves_slot_zero_alone() {
        let mut e = Event::new(0, 0, 0, 0);
        e.set_update(SysctlUpdate { tunable: 2, old: [1, 2, 3], new: [4, 5, 6] });
        e.set_extra(SysctlUpdate { tunable: 0, old: [7, 8, 9], new: [10, 11, 12] });
        assert_eq!(e.update().new, [4, 5, 6]);
        assert_eq!(e.extra().old, [7, 8, 9]);
        // Slot 1's old[0] is at byte 64 of the payload: 56 bytes of slot 0,
        // then slot 1's id and padding (what the BPF side writes).
        let raw = e.raw_data();
        assert_eq!(raw[64..72], 7i64.to_ne_bytes());
        assert_eq!(raw[88..96], 10i64.to_ne_bytes());
    }

    #[test]
    fn text_stops_at_nul() {
        let mut e = Event::new(0, 0, 0, 0);
        e.set_raw_data(b"net/ipv4/tcp_rmem\0junk");
        assert_eq!(e.text(), "net/ipv4/tcp_rmem");
    }
}
