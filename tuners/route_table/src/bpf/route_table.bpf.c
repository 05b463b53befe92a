/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * route_table.bpf.c: notice a network namespace whose IPv6 destination
 * cache (dst entries) is close to net.ipv6.route.max_size, and ask
 * userspace (which checks the exact count and owns every decision) to raise
 * that namespace's max_size.
 *
 * Only loaded where max_size still bounds the cache: kernels before 6.3
 * without the CVE-2023-52340 fix ("ipv6: remove max_size check inline with
 * ipv4"), where dst_alloc() fails past max_size and route lookups return
 * -ENETUNREACH. Userspace decides that from BTF (dst_ops.gc returns int
 * there, void once the limit is gone) and skips this object otherwise.
 *
 * Hook: tp_btf/fib6_table_lookup(net, res, table, flp), present since 5.2
 * with this signature and loadable without fentry or kprobes (the
 * original's kprobe/fib6_run_gc + fentry/fib6_age cannot load here). Every
 * IPv6 route lookup that reaches the FIB passes it -- before dst_alloc()
 * for a lookup that needs a new dst -- so it may fire per packet (forwarding,
 * unconnected sockets): calls are sampled with bpftune_sample() before
 * anything is read. A sampled call reads the lookup's namespace's
 * ipv6.ip6_dst_ops.pcpuc_entries.count (the percpu counter's folded value,
 * which lags the exact count by less than dst_count_slack) and
 * ipv6.sysctl.ip6_rt_max_size, and sends an event when count + slack is
 * within one learning-rate step of max_size. Events are rate-limited per
 * (netns, tunable) by the shared helper.
 *
 * Payload slot 0: update[0] = { tunable, old = max_size, new = grown };
 * slot 1: update[1].old[0] = the folded dst count BPF saw.
 */
#include "bpftune_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Tunable and scenario ids: the Rust tables' (src/tables.rs checks them
 * against these enums, anchored in BTF, when the tuner is compiled). */
enum route_table_tunable {
	ROUTE_TABLE_IPV6_MAX_SIZE = 0,
};
enum route_table_tunable route_table_tunable_anchor = ROUTE_TABLE_IPV6_MAX_SIZE;

enum route_table_scenario {
	ROUTE_TABLE_NEARLY_FULL = 0,
};
enum route_table_scenario route_table_scenario_anchor = ROUTE_TABLE_NEARLY_FULL;

/* How far the folded percpu count may lag the exact one: the kernel's
 * DST_PERCPU_COUNTER_BATCH (32) per CPU. Set by userspace before load. */
volatile const __s64 dst_count_slack = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpftune_sample);
} sample_map SEC(".maps");

SEC("tp_btf/fib6_table_lookup")
int BPF_PROG(bpftune_fib6_table_lookup, struct net *net,
	     const struct fib6_result *res, struct fib6_table *table,
	     const struct flowi6 *flp)
{
	struct bpftune_event event = {};
	__s64 old[3] = {}, new[3] = {};
	struct bpftune_sample *s;
	__s64 entries, max_size;
	__u32 zero = 0;

	s = bpf_map_lookup_elem(&sample_map, &zero);
	if (!s || !bpftune_sample(s))
		return 0;
	if (!bpf_core_field_exists(net->ipv6))
		return 0;
	max_size = BPF_CORE_READ(net, ipv6.sysctl.ip6_rt_max_size);
	if (max_size <= 0)
		return 0;
	entries = BPF_CORE_READ(net, ipv6.ip6_dst_ops.pcpuc_entries.count);
	if (entries < 0)
		entries = 0;
	if (!BPFTUNE_NEARLY_FULL(entries + dst_count_slack, max_size))
		return 0;
	old[0] = max_size;
	new[0] = BPFTUNE_GROW(max_size);
	event.payload.update[1].old[0] = entries;
	bpftune_log("route_table: dst entries %ld (+%ld) max_size %ld\n",
		    entries, dst_count_slack, max_size);
	bpftune_send_net_sysctl_event(net, ROUTE_TABLE_NEARLY_FULL,
				      ROUTE_TABLE_IPV6_MAX_SIZE, old, new,
				      &event);
	return 0;
}
