/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * udp_buffer.bpf.c: notice UDP sockets dropping datagrams because their
 * receive buffer is full, and UDP memory approaching pressure/exhaustion;
 * ask userspace (which owns every decision) to act.
 *
 * Hooks (both work where fentry/kprobes do not):
 *  - tp_btf/udp_fail_queue_rcv_skb(rc, sk, skb): a datagram could not be
 *    queued (IPv4 and IPv6). rc == -ENOMEM is a full receive queue: the
 *    socket's sk_rcvbuf is compared with net.core.rmem_max/rmem_default.
 *    It fires per dropped datagram, so it is sampled before any work.
 *    rc == -ENOBUFS (UDP memory) goes to the memory check, not sampled.
 *  - tp_btf/sock_exceed_buf_limit(sk, prot, allocated, kind): a UDP
 *    receive allocation hit udp_mem (kind SK_MEM_RECV).
 *
 * Both fire per dropped datagram during a storm, so every event path is
 * rate-limited before any work: before reading protocol memory, the netns
 * or building an event. All three tunables are global (one decision covers
 * every namespace), so the first gate is a per-tunable time of the last
 * event from any namespace (a clock read and a load of a line written at
 * most every 25 ms); during a storm nearly every call stops there. When it
 * lets a call through, the shared per-(netns, tunable) limiter follows as
 * in every tuner. (On the -ENOMEM path the sampler comes first, and the
 * tunable to ask for is decided from two fields of the socket before the
 * gate, since it is the gate's key.)
 *
 * net.core.rmem_max/rmem_default are global variables of the kernel (not
 * reachable as ksyms here), so userspace copies their values into the
 * globals below at start-up, after each change, and on its 1 s tick.
 *
 * Payload slot 0 is the sysctl update; slot 1 carries measurements (see
 * enum udp_buffer_extra). Userspace re-checks every rule against fresh
 * sysctl values before writing anything.
 */
#include "bpftune_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Tunable and scenario ids: the Rust tables' (src/tables.rs checks them
 * against these enums, anchored in BTF, when the tuner is compiled). */
enum udp_buffer_tunable {
	UDP_BUFFER_UDP_MEM = 0,
	UDP_BUFFER_RMEM_MAX = 1,
	UDP_BUFFER_RMEM_DEFAULT = 2,
};
enum udp_buffer_tunable udp_buffer_tunable_anchor = UDP_BUFFER_UDP_MEM;

enum udp_buffer_scenario {
	UDP_BUFFER_INCREASE = 0,
	UDP_BUFFER_DECREASE = 1,
	UDP_MEM_PRESSURE = 2,
	UDP_MEM_EXHAUSTION = 3,
};
enum udp_buffer_scenario udp_buffer_scenario_anchor = UDP_BUFFER_INCREASE;

/* Payload slot 1: update[1].old[0..2]. */
enum udp_buffer_extra {
	EXTRA_RCVBUF = 0,	/* sk_rcvbuf of the dropping socket */
	EXTRA_LOCKED = 1,	/* 1 if SO_RCVBUF fixed its size */
	EXTRA_MEM_PAGES = 2,	/* UDP memory allocated, pages */
};
/* Anchored in BTF: lib.rs checks its slots against these (same_ids!). */
enum udp_buffer_extra udp_buffer_extra_anchor = EXTRA_RCVBUF;

#define SOCK_RCVBUF_LOCK	2
#define SK_MEM_RECV		1
#define UDP_ENOMEM		12
#define UDP_ENOBUFS		105
#define UDP_BUFFER_MAX		268435456LL

/* Written by userspace (see the header comment). */
volatile __s64 rmem_max = 0;
volatile __s64 rmem_default = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpftune_sample);
} sample_map SEC(".maps");

/* Above 80 % of limit: v + v/4 > limit (the original's test). */
static __always_inline bool above_80(__s64 v, __s64 limit)
{
	return limit > 0 && v + (v >> 2) > limit;
}

/* When an event for each tunable was last sent, from any namespace. */
__u64 last_event_ns[UDP_BUFFER_RMEM_DEFAULT + 1] = {};

/* The event rate limit, taken before any other work of an event path: true
 * when an event for `tunable` may be sent now from the socket's namespace
 * (its slot is then taken for BPFTUNE_EVENT_MIN_GAP_NS), with the netns
 * and its cookie. */
static __always_inline bool event_due(struct sock *sk, __u32 tunable,
				      struct net **net, __u64 *cookie)
{
	__u64 now = bpf_ktime_get_ns();

	if (tunable > UDP_BUFFER_RMEM_DEFAULT ||
	    now - last_event_ns[tunable] < BPFTUNE_EVENT_MIN_GAP_NS)
		return false;
	*net = bpftune_sk_net(sk);
	*cookie = bpftune_net_cookie(*net);
	if (bpftune_rate_limit(*cookie, tunable))
		return false;
	last_event_ns[tunable] = now;
	return true;
}

/* UDP memory hit its limit (-ENOBUFS), and an event for udp_mem in `net`
 * is due: report pressure or exhaustion. A hit of the hard limit while
 * the accounting reads below pressure (it is per-cpu batched) still counts
 * as pressure. */
static __noinline int mem_event(struct sock *sk, struct net *net, __u64 cookie)
{
	struct bpftune_event event = {};
	__s64 mem[3] = {}, allocated = 0;
	int state;

	state = bpftune_proto_mem_state(sk, mem, &allocated);
	if (mem[2] <= 0)
		return 0;
	event.payload.update[1].old[EXTRA_MEM_PAGES] = allocated;
	bpftune_post_net_sysctl_event(net, cookie,
		   state == BPFTUNE_MEM_EXHAUSTION ? UDP_MEM_EXHAUSTION : UDP_MEM_PRESSURE,
		   UDP_BUFFER_UDP_MEM, mem, mem, &event);
	return 0;
}

/* UDP memory hit its limit: rate limit first, then the memory check. */
static __always_inline int mem_check(struct sock *sk)
{
	struct net *net = NULL;
	__u64 cookie = 0;

	if (!event_due(sk, UDP_BUFFER_UDP_MEM, &net, &cookie))
		return 0;
	return mem_event(sk, net, cookie);
}

/* A full receive queue (-ENOMEM) that calls for a larger limit. */
struct rcvbuf_drop {
	__s64 rcvbuf;	/* sk_rcvbuf of the dropping socket */
	__s64 limit;	/* the limit it is near: rmem_max or rmem_default */
	__u32 id;	/* UDP_BUFFER_RMEM_MAX or UDP_BUFFER_RMEM_DEFAULT */
	__u32 locked;	/* SO_RCVBUF fixed its size */
};

/* An event for drop->id in `net` is due: ask for its limit to grow. */
static __noinline int rcvbuf_event(struct net *net, __u64 cookie,
				   const struct rcvbuf_drop *drop)
{
	struct bpftune_event event = {};
	__s64 old[3] = {}, new[3] = {};

	old[0] = drop->limit;
	new[0] = BPFTUNE_GROW(drop->limit);
	event.payload.update[1].old[EXTRA_RCVBUF] = drop->rcvbuf;
	event.payload.update[1].old[EXTRA_LOCKED] = drop->locked;
	bpftune_post_net_sysctl_event(net, cookie, UDP_BUFFER_INCREASE, drop->id, old, new, &event);
	return 0;
}

/* The receive queue was full (-ENOMEM): which limit the socket is near
 * decides the tunable (two fields of the socket, no event yet); then the
 * rate limit; then the event. */
static __always_inline int rcvbuf_check(struct sock *sk)
{
	struct rcvbuf_drop drop = {};
	__s64 max = rmem_max, def = rmem_default;
	struct net *net = NULL;
	__u64 cookie = 0;

	drop.rcvbuf = sk->sk_rcvbuf;
	drop.locked = !!(BPF_CORE_READ_BITFIELD(sk, sk_userlocks) & SOCK_RCVBUF_LOCK);
	if (above_80(drop.rcvbuf, max)) {
		drop.id = UDP_BUFFER_RMEM_MAX;
		drop.limit = max;
	} else if (!drop.locked && above_80(drop.rcvbuf, def)) {
		drop.id = UDP_BUFFER_RMEM_DEFAULT;
		drop.limit = def;
	} else {
		return 0;
	}
	if (BPFTUNE_GROW(drop.limit) >= UDP_BUFFER_MAX)
		return 0;
	if (!event_due(sk, drop.id, &net, &cookie))
		return 0;
	return rcvbuf_event(net, cookie, &drop);
}

SEC("tp_btf/udp_fail_queue_rcv_skb")
int BPF_PROG(bpftune_udp_fail_rcv, int rc, struct sock *sk,
	     struct sk_buff *skb)
{
	struct bpftune_sample *s;
	__u32 zero = 0;

	if (rc == -UDP_ENOBUFS)
		return mem_check(sk);
	if (rc != -UDP_ENOMEM)
		return 0;
	s = bpf_map_lookup_elem(&sample_map, &zero);
	if (!s || !bpftune_sample(s))
		return 0;
	return rcvbuf_check(sk);
}

SEC("tp_btf/sock_exceed_buf_limit")
int BPF_PROG(bpftune_sock_exceed_buf_limit, struct sock *sk,
	     struct proto *prot, long allocated, int kind)
{
	if (kind != SK_MEM_RECV || sk->sk_protocol != IPPROTO_UDP)
		return 0;
	return mem_check(sk);
}
