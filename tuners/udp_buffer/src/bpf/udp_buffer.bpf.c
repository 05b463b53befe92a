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
 *    rc == -ENOBUFS (UDP memory) goes to the memory check, not sampled
 *    (the event rate limiter bounds it).
 *  - tp_btf/sock_exceed_buf_limit(sk, prot, allocated, kind): a UDP
 *    receive allocation hit udp_mem (kind SK_MEM_RECV).
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

/* Tunable ids: must match the Rust table (src/tables.rs). */
enum udp_buffer_tunable {
	UDP_BUFFER_UDP_MEM = 0,
	UDP_BUFFER_RMEM_MAX = 1,
	UDP_BUFFER_RMEM_DEFAULT = 2,
};

/* Scenario ids: must match the Rust table. */
enum udp_buffer_scenario {
	UDP_BUFFER_INCREASE = 0,
	UDP_BUFFER_DECREASE = 1,
	UDP_MEM_PRESSURE = 2,
	UDP_MEM_EXHAUSTION = 3,
};

/* Payload slot 1: update[1].old[0..2]. */
enum udp_buffer_extra {
	EXTRA_RCVBUF = 0,	/* sk_rcvbuf of the dropping socket */
	EXTRA_LOCKED = 1,	/* 1 if SO_RCVBUF fixed its size */
	EXTRA_MEM_PAGES = 2,	/* UDP memory allocated, pages */
};

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

/* UDP memory hit its limit (-ENOBUFS): report pressure or exhaustion.
 * A hit of the hard limit while the accounting reads below pressure (it
 * is per-cpu batched) still counts as pressure. */
static __noinline int mem_check(struct sock *sk)
{
	struct bpftune_event event = {};
	__s64 mem[3] = {}, allocated = 0;
	int state;

	state = bpftune_proto_mem_state(sk, mem, &allocated);
	if (mem[2] <= 0)
		return 0;
	event.payload.update[1].old[EXTRA_MEM_PAGES] = allocated;
	bpftune_send_sk_sysctl_event(sk,
		state == BPFTUNE_MEM_EXHAUSTION ? UDP_MEM_EXHAUSTION : UDP_MEM_PRESSURE,
		UDP_BUFFER_UDP_MEM, mem, mem, &event);
	return 0;
}

/* The receive queue was full (-ENOMEM). */
static __noinline int rcvbuf_check(struct sock *sk)
{
	struct bpftune_event event = {};
	__s64 old[3] = {}, new[3] = {};
	__s64 max = rmem_max, def = rmem_default;
	__s64 rcvbuf = sk->sk_rcvbuf;
	bool locked;
	__u32 id;

	locked = BPF_CORE_READ_BITFIELD(sk, sk_userlocks) & SOCK_RCVBUF_LOCK;
	if (above_80(rcvbuf, max)) {
		id = UDP_BUFFER_RMEM_MAX;
		old[0] = max;
	} else if (!locked && above_80(rcvbuf, def)) {
		id = UDP_BUFFER_RMEM_DEFAULT;
		old[0] = def;
	} else {
		return 0;
	}
	new[0] = BPFTUNE_GROW(old[0]);
	if (new[0] >= UDP_BUFFER_MAX)
		return 0;
	event.payload.update[1].old[EXTRA_RCVBUF] = rcvbuf;
	event.payload.update[1].old[EXTRA_LOCKED] = locked;
	bpftune_send_sk_sysctl_event(sk, UDP_BUFFER_INCREASE, id, old, new,
				     &event);
	return 0;
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
