/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * bpftune.bpf.h: what every bpftune-rs BPF object shares.
 *
 * The event layout defined here is the only definition: the Rust side uses
 * the types libbpf-cargo generates from it, never a hand-written mirror.
 * Include after vmlinux.h and the libbpf headers (bpftune_common.h does both).
 */
#ifndef BPFTUNE_BPF_H
#define BPFTUNE_BPF_H

#define BPFTUNE_MAX_VALUES	3
#define BPFTUNE_MAX_NAME	128
#define BPFTUNE_MAX_DATA	128
#define BPFTUNE_MAX_UPDATES	4
/* 128 KiB, shared by every tuner. The daemon creates it and each tuner
 * reuses its fd before loading. */
#define BPFTUNE_RINGBUF_SIZE	(128 * 1024)
/* Events about the same (netns, tuner, tunable) closer than this are dropped
 * in BPF: one decision per 25 ms is plenty. */
#define BPFTUNE_EVENT_MIN_GAP_NS	(25ULL * 1000 * 1000)
/* Adaptive sampling: if sampled instances arrive closer than this, sample
 * less often. */
#define BPFTUNE_SAMPLE_MIN_GAP_NS	(10ULL * 1000 * 1000)
#define BPFTUNE_SAMPLE_RATE_DEFAULT	4
#define BPFTUNE_SAMPLE_RATE_MAX		(1 << 16)

#define BPFTUNE_DELTA_MAX	4

/* Netns cookie meaning "could not be determined". */
#define BPFTUNE_NETNS_UNKNOWN	((__u64)-1)

struct bpftune_sysctl_update {
	__u32 id;		/* tunable index in the tuner's table */
	__u32 pad;
	__s64 old[BPFTUNE_MAX_VALUES];
	__s64 new[BPFTUNE_MAX_VALUES];
};

/* A sysctl write seen by the sysctl tuner's cgroup/sysctl program. */
#define BPFTUNE_SYSCTL_NAME	96
#define BPFTUNE_SYSCTL_VALUE	96
#define BPFTUNE_COMM_LEN	16
enum bpftune_sysctl_write_flags {
	BPFTUNE_WRITE_PID_KNOWN = 1,	/* event.pid is the writer's */
	BPFTUNE_WRITE_NETNS_KNOWN = 2,	/* event.netns_* are the writer's */
	BPFTUNE_WRITE_VALUE_KNOWN = 4,	/* value holds what was written */
	BPFTUNE_WRITE_COMM_KNOWN = 8,	/* comm holds the writer's name */
};
struct bpftune_sysctl_write {
	char name[BPFTUNE_SYSCTL_NAME];	/* net/ipv4/tcp_rmem form */
	char value[BPFTUNE_SYSCTL_VALUE];
	char comm[BPFTUNE_COMM_LEN];
	__u32 flags;			/* enum bpftune_sysctl_write_flags */
	__u32 pad;
};

union bpftune_payload {
	struct bpftune_sysctl_update update[BPFTUNE_MAX_UPDATES];
	char str[BPFTUNE_MAX_NAME];
	__u8 raw_data[BPFTUNE_MAX_DATA];
	struct bpftune_sysctl_write sysctl_write;	/* 216 bytes, fits */
};

/* 248 bytes, fixed: what every BPF program posts to the shared ring buffer. */
struct bpftune_event {
	__u32 tuner_id;
	__u32 scenario_id;
	__u64 netns_cookie;	/* BPFTUNE_NETNS_UNKNOWN if unknown */
	__s32 pid;
	__u32 netns_inum;	/* inode of the netns, to find a handle for it */
	union bpftune_payload payload;
};

/* Shared counters the daemon reads: index 0 = events lost to a full ring
 * buffer. */
enum bpftune_stat {
	BPFTUNE_STAT_RINGBUF_DROPS = 0,
	BPFTUNE_STAT_MAX = 4,
};

#ifdef __BPF__

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, BPFTUNE_RINGBUF_SIZE);
} ring_buffer_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BPFTUNE_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} bpftune_stats SEC(".maps");

struct bpftune_rate_key {
	__u64 netns_cookie;
	__u32 tuner_id;
	__u32 tunable_id;
};

/* Per object: when did we last send an event for this key. LRU, so it stays
 * bounded however many namespaces come and go. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct bpftune_rate_key);
	__type(value, __u64);
} last_event_map SEC(".maps");

/* Set by the daemon before load (see bpftune_core::sdk::prepare_object!). */
volatile const __u32 tuner_id = 0;
volatile const __u32 strategy_id = 0;
volatile const __u32 bpftune_pid = 0;
volatile const __u32 bpftune_learning_rate = BPFTUNE_DELTA_MAX;
volatile const bool debug = false;

/* Keeps struct bpftune_event in the object's BTF so libbpf-cargo generates
 * the Rust type from this header. Never written. */
struct bpftune_event bpftune_event_type_anchor = {};
enum bpftune_sysctl_write_flags bpftune_sysctl_write_flags_anchor = 0;

#define bpftune_log(fmt, ...)					\
	do {							\
		if (debug)					\
			bpf_printk(fmt, ##__VA_ARGS__);		\
	} while (0)

static __always_inline __u32 bpftune_shift(void)
{
	__u32 rate = bpftune_learning_rate;

	if (rate > BPFTUNE_DELTA_MAX)
		rate = BPFTUNE_DELTA_MAX;
	return (BPFTUNE_DELTA_MAX + 2) - rate;
}

/* Learning-rate steps: +/- v >> shift (25 % at the default rate). */
#define BPFTUNE_GROW(v)		((v) + ((v) >> bpftune_shift()))
#define BPFTUNE_SHRINK(v)	((v) - ((v) >> bpftune_shift()))
#define BPFTUNE_NEARLY_FULL(v, limit)					\
	((v) >= (limit) || ((v) + ((limit) >> bpftune_shift())) >= (limit))
#define BPFTUNE_NEARLY_EMPTY(v, limit)	((v) <= ((limit) >> bpftune_shift()))

static __always_inline void bpftune_stat_add(__u32 stat, __u64 n)
{
	__u64 *val = bpf_map_lookup_elem(&bpftune_stats, &stat);

	if (val)
		__sync_fetch_and_add(val, n);
}

/* Post an event; a full ring buffer is counted, never silently lost. */
static __always_inline long bpftune_send(struct bpftune_event *event)
{
	long ret;

	event->tuner_id = tuner_id;
#ifndef BPFTUNE_NO_CURRENT_PID
	/* Objects whose program types may not call this helper on every
	 * kernel (sockops before 6.x, cgroup/sysctl before 5.x) define
	 * BPFTUNE_NO_CURRENT_PID and fill in pid themselves, if at all. */
	if (!event->pid)
		event->pid = bpf_get_current_pid_tgid() >> 32;
#endif
	ret = bpf_ringbuf_output(&ring_buffer_map, event, sizeof(*event), 0);
	if (ret < 0)
		bpftune_stat_add(BPFTUNE_STAT_RINGBUF_DROPS, 1);
	return ret;
}

static __always_inline __u64 bpftune_net_cookie(struct net *net)
{
	if (!net)
		return BPFTUNE_NETNS_UNKNOWN;
	if (bpf_core_field_exists(net->net_cookie))
		return BPF_CORE_READ(net, net_cookie);
	return BPFTUNE_NETNS_UNKNOWN;
}

static __always_inline __u32 bpftune_net_inum(struct net *net)
{
	if (!net)
		return 0;
	return BPF_CORE_READ(net, ns.inum);
}

static __always_inline struct net *bpftune_sk_net(struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net);
}

/* Returns 0 when an event for this key may be sent now, -EAGAIN if one was
 * sent less than BPFTUNE_EVENT_MIN_GAP_NS ago. */
static __always_inline int bpftune_rate_limit(__u64 cookie, __u32 tunable)
{
	struct bpftune_rate_key key = {
		.netns_cookie = cookie,
		.tuner_id = tuner_id,
		.tunable_id = tunable,
	};
	__u64 now = bpf_ktime_get_ns();
	__u64 *last = bpf_map_lookup_elem(&last_event_map, &key);

	if (last && now - *last < BPFTUNE_EVENT_MIN_GAP_NS)
		return -EAGAIN;
	bpf_map_update_elem(&last_event_map, &key, &now, BPF_ANY);
	return 0;
}

/* Fill in and post a change request for `tunable` in `net` (cookie
 * `cookie`) from old to new, for a caller that already took the rate limit
 * (bpftune_rate_limit) itself, before doing any other work. */
static __always_inline long bpftune_post_net_sysctl_event(struct net *net,
		__u64 cookie, __u32 scenario, __u32 tunable, const __s64 *old,
		const __s64 *new, struct bpftune_event *event)
{
	int i;

	event->scenario_id = scenario;
	event->netns_cookie = cookie;
	event->netns_inum = bpftune_net_inum(net);
	event->payload.update[0].id = tunable;
	for (i = 0; i < BPFTUNE_MAX_VALUES; i++) {
		event->payload.update[0].old[i] = old[i];
		event->payload.update[0].new[i] = new[i];
	}
	return bpftune_send(event);
}

/* Ask userspace to change tunable `tunable` in `net` from old to new. */
static __always_inline long bpftune_send_net_sysctl_event(struct net *net,
		__u32 scenario, __u32 tunable, const __s64 *old,
		const __s64 *new, struct bpftune_event *event)
{
	__u64 cookie = bpftune_net_cookie(net);

	if (bpftune_rate_limit(cookie, tunable))
		return -EAGAIN;
	return bpftune_post_net_sysctl_event(net, cookie, scenario, tunable,
					     old, new, event);
}

static __always_inline long bpftune_send_sk_sysctl_event(struct sock *sk,
		__u32 scenario, __u32 tunable, const __s64 *old,
		const __s64 *new, struct bpftune_event *event)
{
	return bpftune_send_net_sysctl_event(bpftune_sk_net(sk), scenario,
					     tunable, old, new, event);
}

/* Where a protocol's memory stands against its limits (tcp_mem, udp_mem). */
enum bpftune_mem_state {
	BPFTUNE_MEM_NORMAL = 0,
	BPFTUNE_MEM_PRESSURE = 1,
	BPFTUNE_MEM_EXHAUSTION = 2,
};

/* Read the socket's protocol memory (pages) and its sysctl limits into
 * mem[3] and *allocated, and say whether it nearly reached pressure
 * (mem[1]) or exhaustion (mem[2]). */
static __always_inline int bpftune_proto_mem_state(struct sock *sk, __s64 *mem,
						   __s64 *allocated)
{
	struct proto *prot = BPF_CORE_READ(sk, __sk_common.skc_prot);
	atomic_long_t *alloc_p;
	long *limits_p;
	long limits[3] = {};
	long alloc;

	if (!prot)
		return BPFTUNE_MEM_NORMAL;
	alloc_p = BPF_CORE_READ(prot, memory_allocated);
	limits_p = BPF_CORE_READ(prot, sysctl_mem);
	if (!alloc_p || !limits_p)
		return BPFTUNE_MEM_NORMAL;
	alloc = BPF_CORE_READ(alloc_p, counter);
	if (bpf_probe_read_kernel(limits, sizeof(limits), limits_p))
		return BPFTUNE_MEM_NORMAL;
	mem[0] = limits[0];
	mem[1] = limits[1];
	mem[2] = limits[2];
	*allocated = alloc;
	if (alloc <= 0 || limits[1] <= 0 || limits[2] <= 0)
		return BPFTUNE_MEM_NORMAL;
	if (BPFTUNE_NEARLY_FULL(alloc, limits[2]))
		return BPFTUNE_MEM_EXHAUSTION;
	if (BPFTUNE_NEARLY_FULL(alloc, limits[1]))
		return BPFTUNE_MEM_PRESSURE;
	return BPFTUNE_MEM_NORMAL;
}

/* Adaptive sampling state; one per hot hook. The daemon reads it at exit
 * (bpftune_core::sample). */
struct bpftune_sample {
	__u64 count;
	__u64 last_ns;
	__u64 rate;
};
struct bpftune_sample bpftune_sample_type_anchor = {};

/* True for one call in `rate`; `rate` doubles while sampled calls arrive
 * closer than 10 ms apart and halves back towards the default otherwise.
 * `rate` is always a power of two, so a mask replaces the (slower) 64-bit
 * modulo on this path, which runs on every call of a hot hook. */
static __always_inline bool bpftune_sample(struct bpftune_sample *s)
{
	__u64 now, rate = s->rate;

	if (!rate)
		rate = BPFTUNE_SAMPLE_RATE_DEFAULT;
	if (s->count++ & (rate - 1))
		return false;
	now = bpf_ktime_get_ns();
	if (now - s->last_ns < BPFTUNE_SAMPLE_MIN_GAP_NS) {
		if (rate < BPFTUNE_SAMPLE_RATE_MAX)
			rate <<= 1;
	} else if (rate > BPFTUNE_SAMPLE_RATE_DEFAULT) {
		rate >>= 1;
	}
	s->rate = rate;
	s->last_ns = now;
	return true;
}

#endif /* __BPF__ */

#endif /* BPFTUNE_BPF_H */
