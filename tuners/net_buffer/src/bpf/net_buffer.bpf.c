/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * net_buffer.bpf.c: notice packets dropped because a CPU's input backlog
 * queue (net.core.netdev_max_backlog) was full, and ask userspace (which
 * owns every decision) to grow the backlog and to enable flow limits for
 * the dropping CPU.
 *
 * Hook: tp_btf/kfree_skb(skb, location, reason). It fires for every freed
 * skb of the system, so the first thing done is comparing the drop reason
 * with SKB_DROP_REASON_CPU_BACKLOG (resolved through CO-RE) and returning.
 * On kernels without that reason (the argument itself is 5.17+) userspace
 * does not load this program and counts the per-CPU drops of
 * /proc/net/softnet_stat on its timer instead.
 *
 * Backlog drops are counted exactly (once each; the original counted them
 * twice) per CPU, in a per-CPU array: a drop storm is when CPUs are
 * busiest, and a shared counter would be one cache line bouncing between
 * all of them. Each CPU counts within its own one minute window; once a
 * CPU's count reaches netdev_max_backlog/32 (a CPU's backlog is what
 * overflows, and the softnet_stat fallback compares each CPU's drops with
 * the same figure) the rest of the work is sampled adaptively, and each
 * event takes the shared 25 ms event rate limit before it is built. A sent
 * backlog event starts a new window on every CPU (drop_window_start, a
 * global written only then), so each further increase needs as many drops
 * again. Userspace sums the per-CPU counts for its log.
 *
 * The NAPI budget half of the tuner needs no BPF here: userspace reads the
 * time_squeeze counters of /proc/net/softnet_stat on its timer (per-cpu
 * ksyms do not resolve on kernels without CONFIG_KALLSYMS_ALL, and a NAPI
 * hook would run on every poll).
 *
 * netdev_max_backlog and the flow-limit cpumask are kernel globals, not
 * reachable from BPF here, so userspace copies them into the globals below
 * at start-up, after each change and on its 1 s timer.
 *
 * Payload slot 0 is the sysctl update; slot 1's old[0] carries the CPU.
 */
#include "bpftune_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Tunable and scenario ids: the Rust tables' (src/tables.rs checks them
 * against these enums, anchored in BTF, when the tuner is compiled). */
enum net_buffer_tunable {
	NETDEV_MAX_BACKLOG = 0,
	FLOW_LIMIT_CPU_BITMAP = 1,
	NETDEV_BUDGET = 2,
	NETDEV_BUDGET_USECS = 3,
	HIGH_ORDER_ALLOC_DISABLE = 4,
};
enum net_buffer_tunable net_buffer_tunable_anchor = NETDEV_MAX_BACKLOG;

enum net_buffer_scenario {
	NETDEV_MAX_BACKLOG_INCREASE = 0,
	FLOW_LIMIT_CPU_SET = 1,
};
enum net_buffer_scenario net_buffer_scenario_anchor = NETDEV_MAX_BACKLOG_INCREASE;

/* Payload slot 1: update[1].old[0..2]. */
enum net_buffer_extra {
	EXTRA_CPU = 0,		/* CPU that dropped */
	EXTRA_DROPS = 1,	/* drops counted in the window */
};
/* Anchored in BTF: lib.rs checks its slots against these (same_ids!). */
enum net_buffer_extra net_buffer_extra_anchor = EXTRA_CPU;

#define DROP_WINDOW_NS	(60ULL * 1000 * 1000 * 1000)

/* Set by userspace before load (tables::NETDEV_MAX_BACKLOG_MAX). */
volatile const __s64 netdev_max_backlog_max = 65536;
/* False on kernels without CONFIG_NET_FLOW_LIMIT (no flow_limit_cpu_bitmap). */
volatile const bool flow_limit_enabled = true;

/* Written by userspace (see the header comment). 0 = not known yet. */
volatile __s64 netdev_max_backlog = 0;
/* CPUs 0-63 of net.core.flow_limit_cpu_bitmap. */
volatile __u64 flow_limit_cpu_bitmap = 0;

/* When the last backlog event was sent: windows that began before it are
 * over. Read on every backlog drop, written at most every 25 ms. */
__u64 drop_window_start = 0;

/* One CPU's backlog drops in its current window. */
struct backlog_window {
	__u64 count;
	__u64 start;	/* bpf_ktime_get_ns() when the window began */
};
/* Keeps struct backlog_window in the BTF for the generated Rust type. */
struct backlog_window backlog_window_type_anchor = {};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct backlog_window);
} drop_windows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpftune_sample);
} sample_map SEC(".maps");

/* The shared event rate limit, taken before an event is built: true when
 * an event for (cookie, tunable) may be sent now (its slot is then taken
 * for BPFTUNE_EVENT_MIN_GAP_NS). */
static __always_inline bool event_due(__u64 cookie, __u32 tunable)
{
	return !bpftune_rate_limit(cookie, tunable);
}

/* Build and post an event whose rate-limit slot event_due() took: ask for
 * `tunable` to go from old0 to new0, naming this CPU and its drops. */
static __noinline long post_event(struct net *net, __u64 cookie, __u32 scenario,
				  __u32 tunable, const __s64 *vals)
{
	struct bpftune_event event = {};

	event.scenario_id = scenario;
	event.netns_cookie = cookie;
	event.netns_inum = bpftune_net_inum(net);
	event.payload.update[0].id = tunable;
	event.payload.update[0].old[0] = vals[0];
	event.payload.update[0].new[0] = vals[1];
	event.payload.update[1].old[EXTRA_CPU] = vals[2];
	event.payload.update[1].old[EXTRA_DROPS] = vals[3];
	return bpftune_send(&event);
}

/* Enough backlog drops on this CPU: ask for a longer backlog and for flow
 * limits on this CPU, each only if its rate limit allows. Returns true if
 * the backlog event was sent. */
static __noinline bool backlog_drops(struct sk_buff *skb, __s64 max, __u64 count)
{
	__u32 cpu = bpf_get_smp_processor_id();
	__u64 bits = flow_limit_cpu_bitmap, bit = 0;
	bool grow = max < netdev_max_backlog_max, flow = flow_limit_enabled;
	bool sent = false;
	__s64 vals[4] = {};
	struct net *net;
	__u64 cookie;

	/* CPUs 0-63 are remembered here with a 64-bit shift (the original
	 * shifted a 32-bit int); higher CPUs are always reported and
	 * userspace ignores the ones already set. */
	if (flow && cpu < 64) {
		bit = 1ULL << cpu;
		if (bits & bit)
			flow = false;
	}
	if (!grow && !flow)
		return false;
	net = BPF_CORE_READ(skb, dev, nd_net.net);
	cookie = bpftune_net_cookie(net);
	vals[2] = cpu;
	vals[3] = count;
	if (grow && event_due(cookie, NETDEV_MAX_BACKLOG)) {
		vals[0] = max;
		vals[1] = BPFTUNE_GROW(max);
		if (vals[1] > netdev_max_backlog_max)
			vals[1] = netdev_max_backlog_max;
		sent = !post_event(net, cookie, NETDEV_MAX_BACKLOG_INCREASE,
				   NETDEV_MAX_BACKLOG, vals);
	}
	if (flow && event_due(cookie, FLOW_LIMIT_CPU_BITMAP)) {
		vals[0] = bits;
		vals[1] = bits | bit;
		if (!post_event(net, cookie, FLOW_LIMIT_CPU_SET,
				FLOW_LIMIT_CPU_BITMAP, vals) && bit)
			flow_limit_cpu_bitmap = bits | bit;
	}
	return sent;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(bpftune_kfree_skb, struct sk_buff *skb, void *location,
	     enum skb_drop_reason reason)
{
	struct backlog_window *w;
	struct bpftune_sample *s;
	__u64 now, count;
	__s64 max;
	__u32 zero = 0;

	if (!bpf_core_enum_value_exists(enum skb_drop_reason,
					SKB_DROP_REASON_CPU_BACKLOG))
		return 0;
	if (reason != bpf_core_enum_value(enum skb_drop_reason,
					  SKB_DROP_REASON_CPU_BACKLOG))
		return 0;

	max = netdev_max_backlog;
	if (max <= 0)
		return 0;
	w = bpf_map_lookup_elem(&drop_windows, &zero);
	if (!w)
		return 0;
	now = bpf_ktime_get_ns();
	if (now - w->start > DROP_WINDOW_NS || w->start < drop_window_start) {
		w->start = now;
		w->count = 0;
	}
	/* This CPU's own counter, so a plain increment: nothing else writes
	 * it (a rare nested run on this CPU could lose one count). */
	count = ++w->count;
	if (count < ((__u64)max >> 5))
		return 0;
	s = bpf_map_lookup_elem(&sample_map, &zero);
	if (!s || !bpftune_sample(s))
		return 0;
	if (backlog_drops(skb, max, count))
		drop_window_start = now;
	return 0;
}
