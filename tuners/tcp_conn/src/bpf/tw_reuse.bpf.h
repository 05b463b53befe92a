/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * tw_reuse.bpf.h: notice a network namespace running out of local ports
 * for outgoing TCP connections because of TIME_WAIT sockets.
 *
 * Part of tcp_conn's one sockops program (included by tcp_conn.bpf.c,
 * called from its BPF_SOCK_OPS_TCP_CONNECT_CB case): once per active open,
 * after the kernel picked the local port, never per packet. A program of
 * its own would be called on every sockops callback of every connection
 * (the kernel runs each attached program for each), doubling tcp_conn's
 * cost per connection for one callback's work. It reads, from the
 * socket's namespace:
 *
 *   tw      TIME_WAIT sockets: tcp_death_row.tw_refcount - 1 (5.18+; the
 *           death row is a pointer from 5.18 to 6.0, embedded again from
 *           6.1), tcp_death_row.tw_count before;
 *   range   ip_local_port_range: ip_local_ports.range, int[2] before 6.8,
 *           one u32 (low | high << 16) from 6.8;
 *   reuse   tcp_tw_reuse (int before 5.17, u8 since; read by size);
 *   delay   tcp_tw_reuse_delay in ms (6.13+; 1000 before).
 *
 * Pressure is tw >= 1/2 of the range's span (TW_PRESSURE_*): a closed
 * connection enters TIME_WAIT only once its FIN is acknowledged, which on
 * a busy machine lags the connections being opened by tens of sockets,
 * so "nearly full" by this count can already be too late. Where
 * tcp_tw_reuse is not 1 that alone is reported (scenario 1: enable
 * reuse). Where it is 1, reuse can only help with TIME_WAIT sockets older
 * than the reuse delay: while under pressure, connections are counted per
 * delay window (a two-bucket sliding estimate of those opened within the
 * last delay), and when those "young" ports reach 3/4 of the span
 * (YOUNG_FULL_*), reuse cannot keep up and scenario 2 (widen the range) is
 * reported. Events are rate-limited per namespace and scenario
 * (bpftune_rate_limit), so a connection storm sends a few, not one per
 * connection.
 *
 * EADDRNOTAVAIL itself has no hook short of a per-syscall one: a failed
 * port search never reaches tcp_connect, so this acts on the approach to
 * exhaustion, not on the failure.
 *
 * Without bpf_get_netns_cookie in sockops (before 5.15) userspace clears
 * have_netns_cookie_helper; connections in namespaces other than the
 * daemon's (own_netns_inum) are then ignored, as no write could reach them.
 */
/* Scenario ids SCENARIO_TW_REUSE/SCENARIO_PORT_RANGE and tunable ids
 * TUNABLE_TW_REUSE/TUNABLE_PORT_RANGE (the rate limiter's key) are in
 * tcp_conn.bpf.c's enums, with the congestion-control part's. */

/* Thresholds, as shares of the port range's span; anchored in BTF so that
 * tw_policy.rs takes its TW_PRESSURE_* and YOUNG_FULL_* from the skeleton. */
enum tw_reuse_threshold {
	TW_PRESSURE_NUM = 1,
	TW_PRESSURE_DEN = 2,
	YOUNG_FULL_NUM = 3,
	YOUNG_FULL_DEN = 4,
};
enum tw_reuse_threshold tw_reuse_threshold_anchor = 0;

#define REUSE_DELAY_MS_DEFAULT	1000
#define NETNS_MAX		1024

/* have_netns_cookie_helper and fallback_netns_cookie are tcp_conn.bpf.c's. */
volatile const __u32 own_netns_inum = 0;

/* Older layouts, for CO-RE: only the fields read here. */
struct inet_timewait_death_row___old {
	atomic_t tw_count;
} __attribute__((preserve_access_index));

struct netns_ipv4___dr_ptr {
	struct inet_timewait_death_row *tcp_death_row;
} __attribute__((preserve_access_index));

struct local_ports___old {
	int range[2];
} __attribute__((preserve_access_index));

/* What the event's raw_data carries; read by userspace via the generated
 * type. */
struct tw_reuse_event {
	__u32 tw;		/* TIME_WAIT sockets in the namespace */
	__u32 low;		/* ip_local_port_range */
	__u32 high;
	__u32 young;		/* connections within the reuse delay */
	__u32 reuse;		/* tcp_tw_reuse as BPF read it */
	__u32 delay_ms;		/* TIME_WAIT reuse delay */
};

struct tw_reuse_event tw_reuse_event_type_anchor = {};

/* Connections per reuse-delay window, per namespace, kept only while a
 * namespace is at least half full. */
struct tw_window {
	__u64 start_ns;
	__u32 cur;
	__u32 prev;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NETNS_MAX);
	__type(key, __u64);
	__type(value, struct tw_window);
} tw_windows SEC(".maps");

/* Namespaces userspace stopped acting in (an administrator owns them). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NETNS_MAX);
	__type(key, __u64);
	__type(value, __u8);
} tw_netns_disabled SEC(".maps");

static __always_inline __u32 tw_count(struct net *net)
{
	struct inet_timewait_death_row *dr;
	int refs;

	/* Existence checks on the flavours, not sizes: a size relocation
	 * fails outright where the field's kind (struct, pointer, array)
	 * differs from this build's. */
	if (bpf_core_field_exists(((struct netns_ipv4___dr_ptr *)0)->tcp_death_row)) {
		struct netns_ipv4___dr_ptr *ip = (void *)&net->ipv4;

		dr = BPF_CORE_READ(ip, tcp_death_row);
		if (!dr)
			return 0;
	} else {
		dr = &net->ipv4.tcp_death_row;
	}
	if (bpf_core_field_exists(dr->tw_refcount)) {
		refs = BPF_CORE_READ(dr, tw_refcount.refs.counter);
		return refs > 1 ? refs - 1 : 0;
	}
	refs = BPF_CORE_READ((struct inet_timewait_death_row___old *)dr,
			     tw_count.counter);
	return refs > 0 ? refs : 0;
}

static __always_inline void port_range(struct net *net, __u32 *low,
				       __u32 *high)
{
	struct local_ports *lp = &net->ipv4.ip_local_ports;

	if (bpf_core_field_exists(((struct local_ports___old *)0)->range)) {
		int r[2] = {};

		bpf_core_read(&r, sizeof(r),
			      &((struct local_ports___old *)lp)->range);
		*low = r[0];
		*high = r[1];
	} else {
		__u32 r = BPF_CORE_READ(lp, range);

		*low = r & 0xffff;
		*high = r >> 16;
	}
}

static __always_inline __u32 reuse_delay_ms(struct net *net)
{
	if (bpf_core_field_exists(net->ipv4.sysctl_tcp_tw_reuse_delay))
		return BPF_CORE_READ(net, ipv4.sysctl_tcp_tw_reuse_delay);
	return REUSE_DELAY_MS_DEFAULT;
}

/* Connections opened within the last reuse delay (this one included). */
static __always_inline __u32 young_count(__u64 key, __u32 delay_ms)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 delay = (__u64)(delay_ms ? delay_ms : 1) * 1000000ULL;
	struct tw_window *w = bpf_map_lookup_elem(&tw_windows, &key);
	__u64 elapsed;

	if (!w) {
		struct tw_window fresh = { .start_ns = now, .cur = 1 };

		bpf_map_update_elem(&tw_windows, &key, &fresh, BPF_ANY);
		return 1;
	}
	elapsed = now - w->start_ns;
	if (elapsed >= delay) {
		w->prev = elapsed >= 2 * delay ? 0 : w->cur;
		w->cur = 0;
		w->start_ns = now;
		elapsed = 0;
	}
	w->cur++;
	/* The previous window's share still inside the last delay. */
	return w->cur + (__u32)((__u64)w->prev * (delay - elapsed) / delay);
}

/* At BPF_SOCK_OPS_TCP_CONNECT_CB. */
static __always_inline void tw_reuse_on_connect(struct bpf_sock_ops *skops)
{
	struct bpftune_event event = {};
	struct tw_reuse_event *ev = (struct tw_reuse_event *)event.payload.raw_data;
	struct bpf_sock *sk;
	struct tcp_sock *tp;
	struct net *net;
	__u32 tw, low = 0, high = 0, span, young = 0, reuse, delay, scenario;
	__u64 cookie;

	sk = skops->sk;
	if (!sk)
		return;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return;
	net = bpftune_sk_net((struct sock *)tp);
	if (!net)
		return;

	port_range(net, &low, &high);
	if (high < low)
		return;
	span = high - low + 1;
	tw = tw_count(net);
	if (tw * TW_PRESSURE_DEN < span * TW_PRESSURE_NUM)
		return;	/* far from full: the common case ends here */

	if (have_netns_cookie_helper) {
		cookie = bpf_get_netns_cookie(skops);
	} else {
		if (bpftune_net_inum(net) != own_netns_inum)
			return;
		cookie = fallback_netns_cookie;
	}
	if (bpf_map_lookup_elem(&tw_netns_disabled, &cookie))
		return;

	delay = reuse_delay_ms(net);
	/* An int before 5.17, a u8 since: one byte at the relocated offset
	 * is the value either way on little-endian machines (it is 0..2). */
	reuse = BPF_CORE_READ(net, ipv4.sysctl_tcp_tw_reuse);
	if (reuse != 1) {
		scenario = SCENARIO_TW_REUSE;
		if (bpftune_rate_limit(cookie, TUNABLE_TW_REUSE))
			return;
	} else {
		young = young_count(cookie, delay);
		if (young * YOUNG_FULL_DEN < span * YOUNG_FULL_NUM)
			return;	/* reuse keeps up */
		scenario = SCENARIO_PORT_RANGE;
		if (bpftune_rate_limit(cookie, TUNABLE_PORT_RANGE))
			return;
	}
	event.scenario_id = scenario;
	event.netns_cookie = cookie;
	event.netns_inum = bpftune_net_inum(net);
	ev->tw = tw;
	ev->low = low;
	ev->high = high;
	ev->young = young;
	ev->reuse = reuse;
	ev->delay_ms = delay;
	bpftune_send(&event);
}
