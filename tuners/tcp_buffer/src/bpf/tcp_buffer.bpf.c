/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * tcp_buffer.bpf.c: notice TCP sockets limited by their namespace's buffer
 * maxima, TCP memory approaching pressure/exhaustion, and SYN floods; ask
 * userspace (which owns every decision) to act.
 *
 * Hooks (all work on kernels where fentry/kprobes do not):
 *  - tp_btf/tcp_rcvbuf_grow (6.16+; at most once per RTT, and only when the
 *    application read more in the last RTT than the receive space allows
 *    for): receive buffer at its netns's tcp_rmem[2] -> event for tcp_rmem.
 *    Before 6.16, tp_btf/tcp_rcv_space_adjust (per read) does the same
 *    check, sampled, and attached only in short windows (below).
 *  - tp_btf/tcp_probe (per incoming segment): send buffer at its netns's
 *    tcp_wmem[2], full of queued data, and smaller than the path needs
 *    (sndbuf_needed) -> event for tcp_wmem. Userspace attaches it only for
 *    a short window every few seconds and detaches it in between, so most
 *    segments run no program at all; inside the window it is sampled.
 *  - tp_btf/sock_exceed_buf_limit (rare): TCP memory nearly exhausted.
 *  - tp_btf/tcp_retransmit_synack (rare): half-open requests in a listener
 *    whose SYN queue is in the region where tcp_max_syn_backlog drops SYNs.
 *  - tp_btf/inet_sock_set_state: passive SYN_RECV -> ESTABLISHED, counted
 *    per netns so SYN floods can be correlated with real connections.
 *
 * Events carry the socket's netns cookie and inode. Payload slot 0 is the
 * sysctl update (old values read from the socket's netns, new = one step);
 * slot 1 carries measurements (see enum tcp_buffer_extra).
 */
#include "bpftune_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Tunable and scenario ids: the Rust tables' (src/tables.rs checks them
 * against these enums, anchored in BTF, when the tuner is compiled). */
enum tcp_buffer_tunable {
	TCP_BUFFER_WMEM = 0,
	TCP_BUFFER_RMEM = 1,
	TCP_BUFFER_MEM = 2,
	TCP_BUFFER_MAX_SYN_BACKLOG = 8,
};
enum tcp_buffer_tunable tcp_buffer_tunable_anchor = TCP_BUFFER_WMEM;

enum tcp_buffer_scenario {
	TCP_BUFFER_INCREASE = 0,
	TCP_MEM_PRESSURE = 3,
	TCP_MEM_EXHAUSTION = 4,
	TCP_MAX_SYN_BACKLOG_INCREASE = 8,
};
enum tcp_buffer_scenario tcp_buffer_scenario_anchor = TCP_BUFFER_INCREASE;

/* Payload slot 1: update[1].old[0..2] and update[1].new[0..2]. */
enum tcp_buffer_extra {
	EXTRA_SRTT_US = 0,	/* old[0]: smoothed RTT of the socket, us */
	EXTRA_MEM_PAGES = 1,	/* old[1]: TCP memory allocated, pages */
	EXTRA_SYNCOOKIES = 2,	/* old[2]: netns tcp_syncookies */
	EXTRA_SYN_FLOODS = 3,	/* new[0]: SYN-flood observations in the netns */
	EXTRA_ESTABLISHED = 4,	/* new[1]: passive opens in the netns */
	EXTRA_MEM_STATE = 5,	/* new[2]: enum bpftune_mem_state */
};
/* Anchored in BTF: wire.rs checks its slots against these (same_ids!). */
enum tcp_buffer_extra tcp_buffer_extra_anchor = EXTRA_SRTT_US;

#define SOCK_SNDBUF_LOCK	1
#define SOCK_RCVBUF_LOCK	2
#define TCP_BUFFER_MAX		2147483647LL
/* A send buffer holding this many times the bytes the path delivers in one
 * minimum RTT already covers the path: twice for the kernel's own headroom
 * (it sizes send buffers for two congestion windows) and twice for the
 * per-buffer overhead sk_sndbuf counts besides payload. */
#define SNDBUF_NEED_FACTOR	4

/* Per-netns counters for SYN-flood correlation. */
struct netns_counts {
	__u64 established;
	__u64 syn_floods;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct netns_counts);
} netns_counts_map SEC(".maps");

/* Adaptive sampling state of the hot hooks, per CPU: tcp_probe fires on
 * the sending and the receiving CPU of every flow, and one shared counter
 * would bounce its cache line between them on every segment. */
enum sample_id {
	SAMPLE_RCV_SPACE = 0,
	SAMPLE_TCP_PROBE = 1,
	SAMPLE_SYN_FLOOD = 2,
	SAMPLE_MAX = 3,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SAMPLE_MAX);
	__type(key, __u32);
	__type(value, struct bpftune_sample);
} sample_map SEC(".maps");

static __always_inline bool sampled(__u32 id)
{
	struct bpftune_sample *s = bpf_map_lookup_elem(&sample_map, &id);

	return s && bpftune_sample(s);
}

/* A hook that fires rarely does its work on every call; it still counts
 * its calls in its sample slot (rate 1) for the exit report. */
static __always_inline void counted(__u32 id)
{
	struct bpftune_sample *s = bpf_map_lookup_elem(&sample_map, &id);

	if (s) {
		s->count++;
		s->rate = 1;
	}
}

static __always_inline void extra_set(struct bpftune_event *e, int idx, __s64 v)
{
	if (idx < 3)
		e->payload.update[1].old[idx] = v;
	else
		e->payload.update[1].new[idx - 3] = v;
}

/* Report TCP memory approaching pressure or exhaustion. */
static __always_inline void send_mem_event(struct sock *sk, int state,
					   const __s64 *mem, __s64 allocated,
					   struct bpftune_event *event)
{
	__s64 new[3] = { mem[0], mem[1], BPFTUNE_GROW(mem[2]) };

	extra_set(event, EXTRA_MEM_PAGES, allocated);
	extra_set(event, EXTRA_MEM_STATE, state);
	bpftune_send_sk_sysctl_event(sk,
		state == BPFTUNE_MEM_EXHAUSTION ? TCP_MEM_EXHAUSTION : TCP_MEM_PRESSURE,
		TCP_BUFFER_MEM, mem, new, event);
}

static __always_inline __s64 sk_srtt_us(struct sock *sk, bool receiver)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__u32 rtt = 0;

	/* A pure receiver only measures its RTT through rcv_rtt_est; srtt_us
	 * would stay at the handshake's value. Both are stored << 3. */
	if (receiver)
		rtt = BPF_CORE_READ(tp, rcv_rtt_est.rtt_us);
	if (!rtt)
		rtt = BPF_CORE_READ(tp, srtt_us);
	return rtt >> 3;
}

/* Ask to grow tunable `id` (tcp_rmem or tcp_wmem) of the socket's netns. */
static __always_inline void send_buffer_event(struct sock *sk, __u32 id,
					      const int *limits,
					      bool receiver,
					      struct bpftune_event *event)
{
	__s64 old[3] = { limits[0], limits[1], limits[2] };
	__s64 new[3] = { limits[0], limits[1], BPFTUNE_GROW((__s64)limits[2]) };

	if (new[2] > TCP_BUFFER_MAX)
		new[2] = TCP_BUFFER_MAX;
	if (new[2] <= old[2])
		return;
	extra_set(event, EXTRA_SRTT_US, sk_srtt_us(sk, receiver));
	extra_set(event, EXTRA_MEM_STATE, BPFTUNE_MEM_NORMAL);
	bpftune_send_sk_sysctl_event(sk, TCP_BUFFER_INCREASE, id, old, new, event);
}

/* The hot hooks below run for a large share of TCP segments while they
 * are attached: all but sampled calls return after the sampling check,
 * and the work (with its
 * 248-byte event on the stack, which clang would otherwise zero on every
 * call) lives in non-inlined functions. Sockets are read through their BTF
 * pointers (plain loads, CO-RE relocated) rather than probe-read helpers. */

static __noinline int rmem_check(struct sock *sk)
{
	struct bpftune_event event = {};
	__s64 mem[3] = {}, allocated = 0;
	int limits[3];
	struct net *net;
	int rcvbuf, state;

	/* The application chose its size (SO_RCVBUF): not ours to change. */
	if (BPF_CORE_READ_BITFIELD(sk, sk_userlocks) & SOCK_RCVBUF_LOCK)
		return 0;
	net = sk->__sk_common.skc_net.net;
	if (!net)
		return 0;
	limits[0] = net->ipv4.sysctl_tcp_rmem[0];
	limits[1] = net->ipv4.sysctl_tcp_rmem[1];
	limits[2] = net->ipv4.sysctl_tcp_rmem[2];
	rcvbuf = sk->sk_rcvbuf;
	if (limits[2] <= 0 || !BPFTUNE_NEARLY_FULL(rcvbuf, limits[2]))
		return 0;
	state = bpftune_proto_mem_state(sk, mem, &allocated);
	if (state != BPFTUNE_MEM_NORMAL) {
		send_mem_event(sk, state, mem, allocated, &event);
		return 0;
	}
	send_buffer_event(sk, TCP_BUFFER_RMEM, limits, true, &event);
	return 0;
}

/* The receiver read more in the last RTT than its receive space allowed
 * for, so the kernel is about to grow sk_rcvbuf (up to tcp_rmem[2]): the
 * one moment a buffer at the maximum is known to hold the flow back. Fires
 * at most once per RTT per socket, and not at all in a steady state. */
SEC("tp_btf/tcp_rcvbuf_grow")
int BPF_PROG(bpftune_rcvbuf_grow, struct sock *sk, int time)
{
	counted(SAMPLE_RCV_SPACE);
	return rmem_check(sk);
}

/* Fallback before 6.16: per read, sampled, attached in windows only. */
SEC("tp_btf/tcp_rcv_space_adjust")
int BPF_PROG(bpftune_rcv_space_adjust, struct sock *sk)
{
	if (!sampled(SAMPLE_RCV_SPACE))
		return 0;
	return rmem_check(sk);
}

/* Whether a larger send buffer could raise this connection's throughput:
 * only if the buffer is smaller than SNDBUF_NEED_FACTOR bandwidth-delay
 * products (delivery rate x min RTT). A sender held back by the CPU or by
 * its receiver (veth, loopback, a slow reader) fills any send buffer, and
 * growing it then only adds memory and cache misses. Without a rate or RTT
 * sample yet, assume the buffer is needed. */
static __always_inline bool sndbuf_needed(struct sock *sk, int sndbuf)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	/* The verifier knows sk only as a struct sock: read the tcp_sock
	 * fields with CO-RE probe reads (this runs on sampled calls only). */
	__u64 delivered = BPF_CORE_READ(tp, rate_delivered);
	__u64 interval_us = BPF_CORE_READ(tp, rate_interval_us);
	__u64 mss = BPF_CORE_READ(tp, mss_cache);
	__u64 min_rtt_us = BPF_CORE_READ(tp, rtt_min.s[0].v);
	__u64 bdp;

	if (!delivered || !interval_us || !min_rtt_us || min_rtt_us == ~0U)
		return true;
	bdp = delivered * mss * min_rtt_us / interval_us;
	return (__u64)sndbuf < SNDBUF_NEED_FACTOR * bdp;
}

static __noinline int wmem_check(struct sock *sk)
{
	struct bpftune_event event = {};
	__s64 mem[3] = {}, allocated = 0;
	int limits[3];
	int sndbuf, queued, state;
	struct net *net;

	if (BPF_CORE_READ_BITFIELD(sk, sk_userlocks) & SOCK_SNDBUF_LOCK)
		return 0;
	sndbuf = sk->sk_sndbuf;
	queued = sk->sk_wmem_queued;
	/* Send-buffer limited: the queue is (nearly) as large as the buffer. */
	if (sndbuf <= 0 || !BPFTUNE_NEARLY_FULL(queued, sndbuf))
		return 0;
	net = sk->__sk_common.skc_net.net;
	if (!net)
		return 0;
	limits[0] = net->ipv4.sysctl_tcp_wmem[0];
	limits[1] = net->ipv4.sysctl_tcp_wmem[1];
	limits[2] = net->ipv4.sysctl_tcp_wmem[2];
	if (limits[2] <= 0 || !BPFTUNE_NEARLY_FULL(sndbuf, limits[2]))
		return 0;
	state = bpftune_proto_mem_state(sk, mem, &allocated);
	if (state != BPFTUNE_MEM_NORMAL) {
		send_mem_event(sk, state, mem, allocated, &event);
		return 0;
	}
	if (!sndbuf_needed(sk, sndbuf))
		return 0;
	send_buffer_event(sk, TCP_BUFFER_WMEM, limits, false, &event);
	return 0;
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(bpftune_tcp_probe, struct sock *sk, const struct sk_buff *skb)
{
	if (!sampled(SAMPLE_TCP_PROBE))
		return 0;
	return wmem_check(sk);
}

SEC("tp_btf/sock_exceed_buf_limit")
int BPF_PROG(bpftune_sock_exceed_buf_limit, struct sock *sk, struct proto *prot,
	     long allocated, int kind)
{
	struct bpftune_event event = {};
	__s64 mem[3] = {}, alloc = 0;
	int state;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	state = bpftune_proto_mem_state(sk, mem, &alloc);
	if (state == BPFTUNE_MEM_NORMAL)
		return 0;
	send_mem_event(sk, state, mem, alloc, &event);
	return 0;
}

static __always_inline struct netns_counts *netns_counts(__u64 cookie)
{
	struct netns_counts zero = {}, *c;

	c = bpf_map_lookup_elem(&netns_counts_map, &cookie);
	if (c)
		return c;
	bpf_map_update_elem(&netns_counts_map, &cookie, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&netns_counts_map, &cookie);
}

/* Count passive opens that complete, per netns. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(bpftune_set_state, const struct sock *sk, const int oldstate,
	     const int newstate)
{
	struct netns_counts *c;

	if (newstate != TCP_ESTABLISHED || oldstate != TCP_SYN_RECV)
		return 0;
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	c = netns_counts(bpftune_net_cookie(bpftune_sk_net((struct sock *)sk)));
	if (c)
		__sync_fetch_and_add(&c->established, 1);
	return 0;
}

/* A SYN-ACK is retransmitted: a request is still half-open. If the
 * listener's SYN queue is where the kernel starts dropping SYNs (the last
 * quarter of tcp_max_syn_backlog without syncookies, or a full queue with
 * them), report a SYN flood. */
SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(bpftune_retransmit_synack, const struct sock *listener,
	     const struct request_sock *req)
{
	struct sock *sk = (struct sock *)listener;
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	struct bpftune_event event = {};
	__s64 old[3] = {}, new[3] = {}, mem[3] = {}, allocated = 0;
	struct netns_counts *c;
	__s64 max_syn, qlen, max_ack;
	__u64 floods = 0, established = 0;
	struct net *net;
	int syncookies;
	bool stressed;

	if (BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_LISTEN)
		return 0;
	net = bpftune_sk_net(sk);
	if (!net)
		return 0;
	max_syn = BPF_CORE_READ(net, ipv4.sysctl_max_syn_backlog);
	syncookies = BPF_CORE_READ(net, ipv4.sysctl_tcp_syncookies);
	qlen = BPF_CORE_READ(icsk, icsk_accept_queue.qlen.counter);
	max_ack = BPF_CORE_READ(sk, sk_max_ack_backlog);
	if (syncookies)
		stressed = qlen >= max_ack;
	else
		stressed = max_syn > 0 && max_syn - qlen < (max_syn >> 2);
	if (!stressed)
		return 0;
	c = netns_counts(bpftune_net_cookie(net));
	if (c) {
		__sync_fetch_and_add(&c->syn_floods, 1);
		floods = c->syn_floods;
		established = c->established;
	}
	if (!sampled(SAMPLE_SYN_FLOOD))
		return 0;
	old[0] = max_syn;
	new[0] = BPFTUNE_GROW(max_syn);
	extra_set(&event, EXTRA_SYNCOOKIES, syncookies);
	extra_set(&event, EXTRA_SYN_FLOODS, floods);
	extra_set(&event, EXTRA_ESTABLISHED, established);
	extra_set(&event, EXTRA_MEM_STATE, bpftune_proto_mem_state(sk, mem, &allocated));
	extra_set(&event, EXTRA_MEM_PAGES, allocated);
	bpftune_send_net_sysctl_event(net, TCP_MAX_SYN_BACKLOG_INCREASE,
				      TCP_BUFFER_MAX_SYN_BACKLOG, old, new, &event);
	return 0;
}
