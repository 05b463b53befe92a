//! The one ring buffer every tuner's BPF writes to, and the shared counters
//! map next to it. The daemon creates both; tuners `reuse_fd` them. Events
//! are copied into a bounded queue by libbpf's callback and dispatched by
//! tuner id from the daemon's loop.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType, RingBuffer, RingBufferBuilder};

use crate::event::{EVENT_SIZE, Event};

/// 128 KiB, as `BPFTUNE_RINGBUF_SIZE`.
pub const RINGBUF_SIZE: u32 = 128 * 1024;
/// Slots in the shared counters map (`BPFTUNE_STAT_MAX`).
pub const STATS_SLOTS: u32 = 4;
/// Index of "events lost to a full ring buffer".
pub const STAT_RINGBUF_DROPS: u32 = 0;
/// Events held between a ring buffer drain and their dispatch.
pub const QUEUE_MAX: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum RingbufError {
    #[error("could not create {what}: {source}")]
    Create { what: &'static str, source: libbpf_rs::Error },
    #[error("could not set up ring buffer reader: {0}")]
    Reader(libbpf_rs::Error),
}

/// What the callback hands over: decoded events, and how many were
/// malformed or dropped because the queue was full.
#[derive(Debug, Default)]
pub struct EventQueue {
    pub events: VecDeque<Event>,
    pub malformed: u64,
    pub overflowed: u64,
}

/// The shared maps and the reader over the ring buffer.
pub struct SharedRing {
    ringbuf: MapHandle,
    stats: MapHandle,
    reader: RingBuffer<'static>,
    queue: Rc<RefCell<EventQueue>>,
}

impl SharedRing {
    pub fn create() -> Result<Self, RingbufError> {
        let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let ringbuf = MapHandle::create(MapType::RingBuf, Some("ring_buffer_map"), 0, 0, RINGBUF_SIZE, &opts)
            .map_err(|source| RingbufError::Create { what: "ring buffer map", source })?;
        let stats = MapHandle::create(MapType::Array, Some("bpftune_stats"), 4, 8, STATS_SLOTS, &opts)
            .map_err(|source| RingbufError::Create { what: "stats map", source })?;
        let queue = Rc::new(RefCell::new(EventQueue::default()));
        let sink = queue.clone();
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&ringbuf, move |data: &[u8]| {
                let mut q = sink.borrow_mut();
                if data.len() != EVENT_SIZE {
                    q.malformed += 1;
                    return 0;
                }
                match Event::from_bytes(data) {
                    Some(ev) if q.events.len() < QUEUE_MAX => q.events.push_back(ev),
                    Some(_) => q.overflowed += 1,
                    None => q.malformed += 1,
                }
                0
            })
            .map_err(RingbufError::Reader)?;
        let reader = builder.build().map_err(RingbufError::Reader)?;
        Ok(Self { ringbuf, stats, reader, queue })
    }

    pub fn ringbuf_fd(&self) -> i32 {
        self.ringbuf.as_fd().as_raw_fd()
    }

    pub fn stats_fd(&self) -> i32 {
        self.stats.as_fd().as_raw_fd()
    }

    /// The fd to register with the event loop (readable when data waits).
    pub fn epoll_fd(&self) -> i32 {
        self.reader.epoll_fd()
    }

    /// Drain the ring buffer into the queue and hand the queue's contents
    /// over.
    pub fn drain(&self) -> Result<EventQueue, libbpf_rs::Error> {
        self.reader.consume()?;
        Ok(std::mem::take(&mut *self.queue.borrow_mut()))
    }

    /// Events BPF programs could not post because the ring buffer was full.
    pub fn ringbuf_drops(&self) -> u64 {
        let key = STAT_RINGBUF_DROPS.to_ne_bytes();
        // Before 6.5 every bpf(2) command, map lookups included, needs
        // CAP_BPF or CAP_SYS_ADMIN while unprivileged BPF is disabled.
        let _caps = crate::privilege::Raised::raise(crate::privilege::BPF_SYSCALL);
        match self.stats.lookup(&key, MapFlags::ANY) {
            Ok(Some(v)) if v.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&v);
                u64::from_ne_bytes(b)
            }
            _ => 0,
        }
    }
}
