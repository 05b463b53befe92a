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
 * /proc/net/softnet_stat on its timer instead. Backlog drops are counted
 * exactly (once each; the original counted them twice) within a one
 * minute window; once they reach netdev_max_backlog/32 the rest of the
 * work is sampled adaptively and the shared 25 ms event rate limit applies.
 * A sent backlog event starts a new window, so each further increase needs
 * as many drops again.
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

/* Tunable ids: must match the Rust table (src/tables.rs). */
enum net_buffer_tunable {
	NETDEV_MAX_BACKLOG = 0,
	FLOW_LIMIT_CPU_BITMAP = 1,
	NETDEV_BUDGET = 2,
	NETDEV_BUDGET_USECS = 3,
	HIGH_ORDER_ALLOC_DISABLE = 4,
};

/* Scenario ids: must match the Rust table. */
enum net_buffer_scenario {
	NETDEV_MAX_BACKLOG_INCREASE = 0,
	FLOW_LIMIT_CPU_SET = 1,
};

/* Payload slot 1: update[1].old[0..2]. */
enum net_buffer_extra {
	EXTRA_CPU = 0,		/* CPU that dropped */
	EXTRA_DROPS = 1,	/* drops counted in the window */
};

#define DROP_WINDOW_NS	(60ULL * 1000 * 1000 * 1000)

/* Set by userspace before load (tables::NETDEV_MAX_BACKLOG_MAX). */
volatile const __s64 netdev_max_backlog_max = 65536;
/* False on kernels without CONFIG_NET_FLOW_LIMIT (no flow_limit_cpu_bitmap). */
volatile const bool flow_limit_enabled = true;

/* Written by userspace (see the header comment). 0 = not known yet. */
volatile __s64 netdev_max_backlog = 0;
/* CPUs 0-63 of net.core.flow_limit_cpu_bitmap. */
volatile __u64 flow_limit_cpu_bitmap = 0;

/* The counting window. */
__u64 drop_count = 0;
__u64 drop_window_start = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpftune_sample);
} sample_map SEC(".maps");

/* Enough backlog drops were seen: ask for a longer backlog and for flow
 * limits on this CPU. */
static __noinline int backlog_drops(struct sk_buff *skb, __s64 max, __u64 count,
				    __u64 now)
{
	struct bpftune_event event = {};
	__s64 old[3] = {}, new[3] = {};
	struct net *net = BPF_CORE_READ(skb, dev, nd_net.net);
	__u32 cpu = bpf_get_smp_processor_id();
	__u64 bits = flow_limit_cpu_bitmap, bit = 0;

	event.payload.update[1].old[EXTRA_CPU] = cpu;
	event.payload.update[1].old[EXTRA_DROPS] = count;

	if (max < netdev_max_backlog_max) {
		old[0] = max;
		new[0] = BPFTUNE_GROW(max);
		if (new[0] > netdev_max_backlog_max)
			new[0] = netdev_max_backlog_max;
		if (!bpftune_send_net_sysctl_event(net,
				NETDEV_MAX_BACKLOG_INCREASE, NETDEV_MAX_BACKLOG,
				old, new, &event)) {
			drop_count = 0;
			drop_window_start = now;
		}
	}

	if (!flow_limit_enabled)
		return 0;
	/* CPUs 0-63 are remembered here with a 64-bit shift (the original
	 * shifted a 32-bit int); higher CPUs are always reported and
	 * userspace ignores the ones already set. */
	if (cpu < 64) {
		bit = 1ULL << cpu;
		if (bits & bit)
			return 0;
	}
	old[0] = bits;
	new[0] = bits | bit;
	if (!bpftune_send_net_sysctl_event(net, FLOW_LIMIT_CPU_SET,
					   FLOW_LIMIT_CPU_BITMAP, old, new,
					   &event) && bit)
		flow_limit_cpu_bitmap = bits | bit;
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(bpftune_kfree_skb, struct sk_buff *skb, void *location,
	     enum skb_drop_reason reason)
{
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
	now = bpf_ktime_get_ns();
	if (now - drop_window_start > DROP_WINDOW_NS) {
		drop_window_start = now;
		drop_count = 0;
	}
	/* No fetch variant: the objects are built for the baseline BPF ISA. */
	__sync_fetch_and_add(&drop_count, 1);
	count = drop_count;
	if (count < ((__u64)max >> 5))
		return 0;
	s = bpf_map_lookup_elem(&sample_map, &zero);
	if (!s || !bpftune_sample(s))
		return 0;
	return backlog_drops(skb, max, count, now);
}
