/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * neigh_table.bpf.c: notice when the ARP (arp_cache) or NDISC (ndisc_cache)
 * neighbour table is nearly full as a neighbour is created, or nearly empty
 * (with thresholds above the kernel defaults) as one is released, and tell
 * userspace, which owns every decision and makes the change (through the
 * daemon's writer, on the gc_thresh sysctls of the initial namespace).
 *
 * Hooks (fentry/neigh_remove_one, the original's removal hook, cannot load
 * here):
 *  - tp_btf/neigh_create(tbl, dev, pkey, n, exempt_from_gc). It fires right
 *    after the allocation, before the kernel checks the result, so `n` may
 *    be NULL when the table is full: this program never reads `n` (the
 *    verifier would treat it as non-NULL), only `tbl` and `dev`.
 *  - tp_btf/neigh_cleanup_and_release(n, rc): a neighbour leaves its table
 *    (deleted, flushed or garbage collected). `tbl->entries` still counts
 *    it here (it drops when the last reference goes), one too many at most.
 *
 * The neighbour tables are shared by every network namespace; the event
 * still carries the namespace (cookie and inode) and ifindex/name of the
 * device the neighbour belongs to, so that userspace can look at that
 * device's addresses in its own namespace.
 *
 * The payload is a struct neigh_table_event in raw_data (the family tells
 * userspace which gc_thresh3 tunable it is about).
 *
 * Events are sent at most once per NEIGH_EVENT_MIN_GAP_NS per (table,
 * scenario); userspace rate-limits changes further.
 */
#include "bpftune_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Scenario ids: the Rust table's (src/tables.rs checks them against this
 * enum, anchored in BTF, when the tuner is compiled). */
enum neigh_table_scenario {
	NEIGH_TABLE_FULL = 0,
	NEIGH_TABLE_EMPTY = 2,
};
enum neigh_table_scenario neigh_table_scenario_anchor = NEIGH_TABLE_FULL;

#define NEIGH_AF_INET		2
#define NEIGH_AF_INET6		10
/* Shrinking stops at the kernel's default gc_thresh3. */
#define NEIGH_MIN_GC_THRESH3	1024
#define NEIGH_EVENT_MIN_GAP_NS	(100ULL * 1000 * 1000)
#define NEIGH_IFNAMSIZ		16

/* What an event's raw_data carries; read by userspace via the generated
 * type. */
struct neigh_table_event {
	__s64 entries;		/* tbl->entries: every neighbour in the table */
	__s64 gc_entries;	/* tbl->gc_entries: those subject to GC */
	__s64 thresh1;
	__s64 thresh2;
	__s64 thresh3;
	__u32 family;		/* AF_INET (arp_cache) or AF_INET6 (ndisc_cache) */
	__s32 ifindex;		/* device of the neighbour, in its namespace */
	char dev[NEIGH_IFNAMSIZ];
};

struct neigh_table_event neigh_table_event_type_anchor = {};

/* (family << 8 | scenario) -> time of the last event sent. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} neigh_last_event SEC(".maps");

static __always_inline bool neigh_rate_limited(__u32 family, __u32 scenario)
{
	__u32 key = (family << 8) | scenario;
	__u64 now = bpf_ktime_get_ns();
	__u64 *last = bpf_map_lookup_elem(&neigh_last_event, &key);

	if (last && now - *last < NEIGH_EVENT_MIN_GAP_NS)
		return true;
	bpf_map_update_elem(&neigh_last_event, &key, &now, BPF_ANY);
	return false;
}

static __always_inline void neigh_check(struct neigh_table *tbl,
					struct net_device *dev, bool add)
{
	struct bpftune_event event = {};
	struct neigh_table_event *ev =
		(struct neigh_table_event *)event.payload.raw_data;
	__u32 family = BPF_CORE_READ(tbl, family);
	__s64 entries, thresh3;
	__u32 scenario;
	struct net *net;

	if (family != NEIGH_AF_INET && family != NEIGH_AF_INET6)
		return;
	entries = BPF_CORE_READ(tbl, entries.counter);
	thresh3 = BPF_CORE_READ(tbl, gc_thresh3);
	if (entries < 0 || thresh3 <= 0)
		return;
	if (add) {
		if (!BPFTUNE_NEARLY_FULL((__u64)entries, (__u64)thresh3))
			return;
		scenario = NEIGH_TABLE_FULL;
	} else {
		if (!BPFTUNE_NEARLY_EMPTY((__u64)entries, (__u64)thresh3) ||
		    thresh3 <= NEIGH_MIN_GC_THRESH3)
			return;
		scenario = NEIGH_TABLE_EMPTY;
	}
	if (neigh_rate_limited(family, scenario))
		return;

	ev->entries = entries;
	ev->gc_entries = BPF_CORE_READ(tbl, gc_entries.counter);
	ev->thresh1 = BPF_CORE_READ(tbl, gc_thresh1);
	ev->thresh2 = BPF_CORE_READ(tbl, gc_thresh2);
	ev->thresh3 = thresh3;
	ev->family = family;
	ev->ifindex = BPF_CORE_READ(dev, ifindex);
	BPF_CORE_READ_STR_INTO(&ev->dev, dev, name);
	net = BPF_CORE_READ(dev, nd_net.net);
	event.scenario_id = scenario;
	event.netns_cookie = bpftune_net_cookie(net);
	event.netns_inum = bpftune_net_inum(net);
	bpftune_log("neigh_table: family %u entries %ld thresh3 %ld\n", family,
		    entries, thresh3);
	bpftune_send(&event);
}

SEC("tp_btf/neigh_create")
int BPF_PROG(bpftune_neigh_create, struct neigh_table *tbl,
	     struct net_device *dev, const void *pkey, struct neighbour *n,
	     bool exempt_from_gc)
{
	neigh_check(tbl, dev, true);
	return 0;
}

SEC("tp_btf/neigh_cleanup_and_release")
int BPF_PROG(bpftune_neigh_release, struct neighbour *n, int rc)
{
	struct neigh_table *tbl = BPF_CORE_READ(n, tbl);
	struct net_device *dev = BPF_CORE_READ(n, dev);

	if (!tbl || !dev)
		return 0;
	neigh_check(tbl, dev, false);
	return 0;
}
