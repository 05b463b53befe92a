/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * tcp_conn.bpf.c: choose a TCP congestion-control algorithm per connection,
 * per destination and per network namespace, switching a connection only
 * on evidence (bpf_setsockopt(TCP_CONGESTION) costs microseconds).
 *
 * One sockops program on the daemon's cgroup. It runs only on rare
 * callbacks, never per packet:
 *
 *   ACTIVE/PASSIVE_ESTABLISHED  once per connection: decide (below) and
 *                               enable, on this socket only, RETRANS
 *                               callbacks (unless it is known to run bbr;
 *                               they cost nothing until a segment is
 *                               retransmitted) and, if it is one to learn
 *                               from, STATE callbacks.
 *   RETRANS_CB                  per retransmission: if total_retrans >
 *                               segs_out >> 6 (loss above 1/64), switch it
 *                               to bbr, remember the destination as lossy,
 *                               and learn from it at close; on bbr (or
 *                               once switched) RETRANS callbacks stop.
 *   STATE_CB                    on close (FIN_WAIT1, CLOSE_WAIT, or a reset
 *                               from ESTABLISHED): fold the connection's
 *                               retransmits into the destination's decaying
 *                               loss rate (which keeps or clears "lossy"),
 *                               learn the cost of the algorithm it ran if
 *                               it has a rate sample; then turn this
 *                               socket's callbacks off.
 *
 * Choice at establishment, for a destination {netns cookie, peer address}.
 * The connection keeps the algorithm it has (the namespace default) unless:
 *   1. the destination is lossy (recent loss rate above 1/64) and bbr is
 *      available -> bbr;
 *   2. the learned costs distinguish another candidate: the one with the
 *      lowest cost beats the connection's own algorithm by more than
 *      COST_MARGIN and more than the sum of both costs' mean deviations,
 *      each learned from at least MIN_SAMPLES connections (precomputed at
 *      close into host->best, so the usual case needs no getsockopt);
 *   3. exploration: 1 connection in EXPLORE_EVERY per destination (from
 *      the REMOTE_HOST_MIN_INSTANCES-th, counted, not random) tries the
 *      candidate with the fewest samples other than what rules 1-2 chose;
 *      not while the destination's last QUIET_MAX learned connections all
 *      closed without a rate sample (they carried no data: an explored
 *      one would teach nothing either).
 * Tied or unlearned candidates therefore cost nothing per connection but
 * the bounded exploration. Loopback peers are skipped altogether (before
 * any helper call or map lookup).
 *
 * Which connections are learned from at close (STATE callbacks; on a
 * server end they cost two calls, one of them for the move to
 * ESTABLISHED that follows PASSIVE_ESTABLISHED): each of a destination's
 * first LEARN_ALL_FIRST, then 1 in LEARN_EVERY (counted), plus every
 * exploring connection, every connection to a destination remembered as
 * lossy (so that clean ones can clear it) and every connection switched
 * on loss. The others make no call after establishment unless they
 * retransmit. The learned costs are moving averages, so a sample of a busy
 * destination's connections keeps them as current as all of them would;
 * the loss rate is folded from the same uniform sample, so it is not
 * biased either way (beyond the switched connections, which are lossy).
 *
 * Cost of a closed connection (lower is better), relative to the best this
 * destination has shown with any algorithm:
 *   (min_rtt - host_min_rtt) * 10^6 / host_min_rtt
 *   + (host_max_rate - this connection's rate) * 10^6 / host_max_rate
 * The algorithm's learned cost and mean deviation are moving averages
 * (learning-rate shift) of the samples and of |sample - cost|. The
 * integration tests (tests/tests/tcp_conn.rs) drive this program with real
 * connections; userspace has no copy of the logic.
 *
 * Socket storage is created only when a connection is switched on loss
 * (so that its close is not learned as either algorithm); the algorithm a
 * closing connection ran is read with getsockopt at close.
 *
 * Events (scenario 0) go to userspace for the first switch per destination,
 * the first switch made on learned costs, and the first loss-driven
 * switch: at most three per destination while it stays in the LRU map.
 *
 * Kernels differ in what sockops may call: bpf_get_current_pid_tgid not
 * before 6.x (and a pid means nothing in softirq context anyway, so events
 * carry none), bpf_get_netns_cookie not before 5.15 (userspace probes it
 * and clears have_netns_cookie_helper; every connection then counts as the
 * daemon's namespace, whose cookie it passes in fallback_netns_cookie).
 * Atomic adds never use their result (fetching atomics need 5.12).
 */
#define BPFTUNE_NO_CURRENT_PID
#include "bpftune_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#ifndef AF_INET
#define AF_INET		2
#endif
#ifndef AF_INET6
#define AF_INET6	10
#endif
#define SOL_TCP				6
#define TCP_CONGESTION			13
#define TCP_THIN_LINEAR_TIMEOUTS	16
#define TCP_CA_NAME_MAX			16

/*
 * Every number userspace shares with this program is named in an enum
 * anchored in the object's BTF (a global of the enum's type), so that
 * libbpf-cargo generates it into the skeleton: src/ids.rs and src/lib.rs
 * check their enums against these (same_ids!) or take the values from the
 * skeleton, when the tuner is compiled. Every anchor is 0, whether or not
 * 0 is a member, so that they all stay in .bss (no .data map).
 */

/* Tunable and scenario ids of the Rust tables (src/lib.rs); the time-wait
 * part (tw_reuse.bpf.h) uses the last two of each. */
enum tcp_conn_tunable {
	TUNABLE_CONG = 0,		/* net.persock.tcp.congestion_control */
	TUNABLE_TW_REUSE = 5,		/* net.ipv4.tcp_tw_reuse */
	TUNABLE_PORT_RANGE = 6,		/* net.ipv4.ip_local_port_range */
};
enum tcp_conn_tunable tcp_conn_tunable_anchor = TUNABLE_CONG;

enum tcp_conn_scenario {
	SCENARIO_SPECIFY = 0,
	SCENARIO_TW_REUSE = 1,
	SCENARIO_PORT_RANGE = 2,
};
enum tcp_conn_scenario tcp_conn_scenario_anchor = SCENARIO_SPECIFY;

/* Algorithm indexes (events, cong_stats, metrics[]): ids.rs's Algorithm. */
enum tcp_conn_alg {
	CC_CUBIC = 0,
	CC_BBR = 1,
	CC_HTCP = 2,
	CC_RENO = 3,
	NR_CC = 4,
	CC_NONE = 0xff,
};
enum tcp_conn_alg tcp_conn_alg_anchor = CC_CUBIC;
_Static_assert((NR_CC & (NR_CC - 1)) == 0, "NR_CC masks indexes");

/* Why an event was sent: ids.rs's Reason. */
enum tcp_conn_reason {
	REASON_LOSS = 1,	/* loss above 1/64: switched to bbr */
	REASON_COST = 2,	/* learned cost clearly lower */
	REASON_EXPLORE = 3,	/* bounded exploration */
	REASON_UNTRIED = 4,	/* exploration of an unsampled candidate */
	REASON_REMEMBER = 5,	/* destination remembered as lossy: start on bbr */
};
enum tcp_conn_reason tcp_conn_reason_anchor = 0;

/* Indexes in cong_stats after the per-algorithm choice counters. */
enum tcp_conn_stat {
	STAT_THIN_LTO = NR_CC,
	STAT_LOSS = NR_CC + 1,
	NR_CONG_STATS = NR_CC + 2,
};
enum tcp_conn_stat tcp_conn_stat_anchor = 0;

/* The policy's constants; userspace shows the first three in its log
 * lines (ids.rs takes them from the skeleton). */
enum tcp_conn_const {
	DROP_SHIFT = 6,			/* loss above 1/64 of segments sent */
	EXPLORE_EVERY = 64,		/* explore 1 connection in 64 */
	RL_SCALE = 1000000,		/* fixed-point scale of costs */
	REMOTE_HOST_MIN_INSTANCES = 4,	/* first exploring connection */
	MIN_SAMPLES = 2,		/* before a learned cost counts */
	COST_MARGIN = RL_SCALE / 8,	/* smallest gap that counts */
	LEARN_ALL_FIRST = 64,		/* learn from each of the first */
	LEARN_EVERY = 8,		/* then from 1 connection in 8 */
	QUIET_MAX = 8,			/* no exploration after so many
					 * learned closes without data */
	REMOTE_HOST_MAX = 4096,
};
enum tcp_conn_const tcp_conn_const_anchor = 0;

/* Candidate mask (bit i = algorithm i is in the kernel's
 * tcp_available_congestion_control), set by userspace before load. */
volatile const __u32 cc_candidates = 0;
volatile const bool have_netns_cookie_helper = true;
volatile const __u64 fallback_netns_cookie = 0;

struct remote_host_key {
	__u64 netns_cookie;
	__u32 addr[4];		/* peer address; IPv4 as ::ffff:a.b.c.d */
};

struct cc_metric {
	__u64 metric_value;	/* learned cost, lower is better */
	__u64 metric_dev;	/* learned mean |sample - metric_value| */
	__u64 max_rate;		/* best delivery rate seen, bytes/s */
	__u32 min_rtt;		/* best min RTT seen, us */
	__u32 metric_count;	/* connections that updated the cost */
};

/* Host flags. */
#define HOST_LOSSY		0x1	/* recent connections lost > 1/64 */
#define HOST_REPORTED_FIRST	0x2	/* first switch reported */
#define HOST_REPORTED_LEARNED	0x4	/* first cost-driven switch reported */
#define HOST_REPORTED_LOSS	0x8	/* loss switch reported */

struct remote_host {
	__u64 instances;	/* connections established */
	__u64 max_rate;		/* best delivery rate with any algorithm */
	/* Decaying sums over closed connections: each close does
	 * sum -= sum >> shift; sum += this connection's count. Their ratio is
	 * the destination's recent loss rate, weighted by segments, so short
	 * connections count for little. */
	__u64 retrans_sum;
	__u64 segs_sum;
	__u32 min_rtt;		/* best min RTT with any algorithm */
	__u32 flags;
	/* The candidate with the lowest learned cost if some other sampled
	 * candidate is clearly worse (see distinct()), else CC_NONE: only
	 * then may a connection be switched on cost. Updated at close. */
	__u32 best;
	/* Learned closes in a row without a rate sample (saturating at
	 * QUIET_MAX): connections that carry no data teach nothing, and an
	 * exploration among them would only cost a bpf_setsockopt. */
	__u32 quiet;
	struct cc_metric metrics[NR_CC];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, REMOTE_HOST_MAX);
	__type(key, struct remote_host_key);
	__type(value, struct remote_host);
} remote_host_map SEC(".maps");

/* Namespaces where an administrator took over congestion control (set by
 * userspace when the daemon refuses to log a choice there): no more
 * choices in them. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} netns_disabled SEC(".maps");

/* Per-socket flags, kept only for connections switched on loss. */
#define CONN_SWITCHED	0x1	/* switched to bbr mid-connection on loss */
#define CONN_THIN_LTO	0x2	/* we set TCP_THIN_LINEAR_TIMEOUTS */

struct conn_state {
	__u8 flags;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct conn_state);
} conn_state_map SEC(".maps");

/* Counters userspace reads for the summary: choices per algorithm (only
 * successful setsockopt calls), thin-lto settings, loss switches. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NR_CONG_STATS);
	__type(key, __u32);
	__type(value, __u64);
} cong_stats SEC(".maps");

/* What an event's raw_data carries; read by userspace via the generated
 * type. */
struct tcp_conn_event {
	__u32 addr[4];
	__u32 alg;
	__u32 prev_alg;
	__u32 reason;
	__u32 ncandidates;
	__u64 instances;
	__u64 cost;
	__u32 total_retrans;
	__u32 segs_out;
};

struct tcp_conn_event tcp_conn_event_type_anchor = {};

static const char cc_names[NR_CC][TCP_CA_NAME_MAX] = {
	[CC_CUBIC] = "cubic",
	[CC_BBR] = "bbr",
	[CC_HTCP] = "htcp",
	[CC_RENO] = "reno",
};

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&cong_stats, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

/* An algorithm index already checked to be below NR_CC, made visibly so
 * for the verifier. The mask changes nothing (NR_CC is a power of two),
 * but clang may fold two bound checks into one on (a | b), or check one
 * copy of a register and index with another, and the verifier then sees
 * an unbounded index; the empty asm keeps clang from dropping the mask as
 * redundant. */
static __always_inline __u32 cc_idx(__u32 alg)
{
	asm volatile("" : "+r"(alg));
	return alg & (NR_CC - 1);
}

static __always_inline bool candidate(__u32 alg)
{
	return alg < NR_CC && (cc_candidates & (1U << alg));
}

/* The peer address part of a destination's key (no helper call). */
static __always_inline void host_addr(struct bpf_sock_ops *skops,
				      struct remote_host_key *key)
{
	__u32 a0 = 0, a1 = 0, a2 = bpf_htonl(0xffff), a3;

	/* The empty asm statements pin each context load in its branch:
	 * otherwise clang merges them into one load through a computed
	 * context pointer, which the verifier rejects. */
	if (skops->family == AF_INET) {
		a3 = skops->remote_ip4;
		asm volatile("" : "+r"(a3));
	} else {
		a0 = skops->remote_ip6[0];
		asm volatile("" : "+r"(a0));
		a1 = skops->remote_ip6[1];
		asm volatile("" : "+r"(a1));
		a2 = skops->remote_ip6[2];
		asm volatile("" : "+r"(a2));
		a3 = skops->remote_ip6[3];
		asm volatile("" : "+r"(a3));
	}
	key->addr[0] = a0;
	key->addr[1] = a1;
	key->addr[2] = a2;
	key->addr[3] = a3;
}

static __always_inline void host_cookie(struct bpf_sock_ops *skops,
					struct remote_host_key *key)
{
	if (have_netns_cookie_helper)
		key->netns_cookie = bpf_get_netns_cookie(skops);
	else
		key->netns_cookie = fallback_netns_cookie;
}

static __always_inline void host_key(struct bpf_sock_ops *skops,
				     struct remote_host_key *key)
{
	host_addr(skops, key);
	host_cookie(skops, key);
}

/* Loopback peers (127.0.0.0/8, ::ffff:127.0.0.0/104, ::1) have no path to
 * tune: no loss, no bottleneck. */
static __always_inline bool is_loopback(const struct remote_host_key *key)
{
	if (key->addr[0] || key->addr[1])
		return false;
	if (key->addr[2] == bpf_htonl(0xffff))
		return (bpf_ntohl(key->addr[3]) >> 24) == 127;
	return !key->addr[2] && key->addr[3] == bpf_htonl(1);
}

/* Index of the algorithm the socket runs now, or CC_NONE. */
static __always_inline __u8 current_alg(struct bpf_sock_ops *skops)
{
	char name[TCP_CA_NAME_MAX] = {};
	int i, j;

	if (bpf_getsockopt(skops, SOL_TCP, TCP_CONGESTION, name, sizeof(name)))
		return CC_NONE;
	for (i = 0; i < NR_CC; i++) {
		bool same = true;

		for (j = 0; j < 6; j++) {
			if (name[j] != cc_names[i][j]) {
				same = false;
				break;
			}
			if (!name[j])
				break;
		}
		if (same)
			return i;
	}
	return CC_NONE;
}

static __always_inline int set_alg(struct bpf_sock_ops *skops, __u32 alg)
{
	char name[TCP_CA_NAME_MAX] = {};

	if (alg >= NR_CC)
		return -1;
	__builtin_memcpy(name, cc_names[cc_idx(alg)], sizeof(name));
	return bpf_setsockopt(skops, SOL_TCP, TCP_CONGESTION, name,
			      sizeof(name));
}

/* Move a moving average towards a new sample by 1/2^shift of the gap. */
static __always_inline __u64 ewma(__u64 value, __u64 sample, __u32 shift)
{
	if (sample > value)
		return value + ((sample - value) >> shift);
	return value - ((value - sample) >> shift);
}

static __always_inline __u32 ncandidates(void)
{
	__u32 n = 0;
	int i;

	for (i = 0; i < NR_CC; i++)
		if (candidate(i))
			n++;
	return n;
}

/* Is the learned cost of @worse clearly above that of @better: both from
 * at least MIN_SAMPLES connections, and the gap larger than COST_MARGIN
 * and than the sum of their mean deviations? */
static __always_inline bool distinct(struct remote_host *host, __u32 worse,
				     __u32 better)
{
	struct cc_metric *w, *b;
	__u64 margin;

	if (worse >= NR_CC || better >= NR_CC)
		return false;
	w = &host->metrics[cc_idx(worse)];
	b = &host->metrics[cc_idx(better)];
	if (w->metric_count < MIN_SAMPLES || b->metric_count < MIN_SAMPLES)
		return false;
	margin = w->metric_dev + b->metric_dev;
	if (margin < COST_MARGIN)
		margin = COST_MARGIN;
	return w->metric_value > b->metric_value + margin;
}

/* host->best after learning: the sampled candidate with the lowest cost,
 * if some other candidate is distinctly worse; else CC_NONE. */
static __always_inline __u32 best_candidate(struct remote_host *host)
{
	__u64 best_cost = ~0ULL;
	__u32 best = CC_NONE;
	int i;

	for (i = 0; i < NR_CC; i++) {
		if (!candidate(i) || host->metrics[i].metric_count < MIN_SAMPLES)
			continue;
		if (host->metrics[i].metric_value < best_cost) {
			best_cost = host->metrics[i].metric_value;
			best = i;
		}
	}
	if (best == CC_NONE)
		return CC_NONE;
	for (i = 0; i < NR_CC; i++) {
		if (candidate(i) && distinct(host, i, best))
			return best;
	}
	return CC_NONE;
}

/* The candidate other than @skip with the fewest samples, ties broken
 * uniformly at random (reservoir sampling); CC_NONE if there is none. */
static __always_inline __u32 least_sampled(struct remote_host *host,
					   __u32 skip)
{
	__u32 fewest = ~0U, pick = CC_NONE, ties = 0;
	int i;

	for (i = 0; i < NR_CC; i++) {
		__u32 count;

		if (!candidate(i) || i == skip)
			continue;
		count = host->metrics[i].metric_count;
		if (count < fewest) {
			fewest = count;
			pick = i;
			ties = 1;
		} else if (count == fewest) {
			ties++;
			if (bpf_get_prandom_u32() % ties == 0)
				pick = i;
		}
	}
	return pick;
}

static __always_inline void send_event(struct bpf_sock_ops *skops,
				       struct remote_host_key *key,
				       struct remote_host *host,
				       __u32 alg, __u32 prev, __u32 reason,
				       __u32 ncand, __u32 flag)
{
	struct bpftune_event event = {};
	struct tcp_conn_event *ev = (struct tcp_conn_event *)event.payload.raw_data;
	struct bpf_sock *sk = skops->sk;
	struct tcp_sock *tp;
	struct net *net = NULL;

	if (host->flags & flag)
		return;
	if (bpftune_rate_limit(key->netns_cookie, TUNABLE_CONG))
		return;		/* not marked: reported on a later connection */
	if (sk) {
		tp = bpf_skc_to_tcp_sock(sk);
		if (tp)
			net = bpftune_sk_net((struct sock *)tp);
	}
	event.scenario_id = SCENARIO_SPECIFY;
	event.netns_cookie = key->netns_cookie;
	event.netns_inum = bpftune_net_inum(net);
	__builtin_memcpy(ev->addr, key->addr, sizeof(ev->addr));
	ev->alg = alg;
	ev->prev_alg = prev;
	ev->reason = reason;
	ev->ncandidates = ncand;
	ev->instances = host->instances;
	ev->cost = alg < NR_CC ? host->metrics[cc_idx(alg)].metric_value : 0;
	ev->total_retrans = skops->total_retrans;
	ev->segs_out = skops->segs_out;
	if (bpftune_send(&event) == 0)
		host->flags |= flag;
}

/* Callbacks this socket needs until it closes: STATE if it is to be
 * learned from at close (@learn), and, unless it runs bbr already, RETRANS
 * (to switch on loss; no call is made unless a segment is retransmitted).
 * No helper call if nothing is to be added. */
static __always_inline void enable_callbacks(struct bpf_sock_ops *skops,
					     bool on_bbr, bool learn)
{
	__u32 old = skops->bpf_sock_ops_cb_flags, flags = old;

	if (learn)
		flags |= BPF_SOCK_OPS_STATE_CB_FLAG;
	if (!on_bbr && candidate(CC_BBR))
		flags |= BPF_SOCK_OPS_RETRANS_CB_FLAG;
	if (flags != old)
		bpf_sock_ops_cb_flags_set(skops, flags);
}

/* Is the @n-th connection to a destination learned from at close? Each of
 * the first LEARN_ALL_FIRST, then 1 in LEARN_EVERY (counted, like the
 * exploration). Callers add the connections that must always be learned:
 * exploring ones, those to a lossy destination, those switched on loss. */
static __always_inline bool learn_nth(__u64 n)
{
	return n <= LEARN_ALL_FIRST || (n % LEARN_EVERY) == 0;
}

static __always_inline void on_established(struct bpf_sock_ops *skops)
{
	struct remote_host_key key = {};
	struct remote_host *host;
	__u32 alg, reason = 0, best;
	__u8 cur = CC_NONE;
	bool known = false, explore, learn;
	__u64 n;

	if (!skops->sk)
		return;
	host_addr(skops, &key);
	if (is_loopback(&key))
		return;		/* no callbacks, no state for this socket */
	host_cookie(skops, &key);

	host = bpf_map_lookup_elem(&remote_host_map, &key);
	if (!host) {
		struct remote_host new_host = { .instances = 1, .best = CC_NONE };

		bpf_map_update_elem(&remote_host_map, &key, &new_host,
				    BPF_NOEXIST);
		enable_callbacks(skops, false, true);
		return;
	}
	__sync_fetch_and_add(&host->instances, 1);
	/* Racy read of our own increment: two connections at once may both
	 * explore or both not; the rate stays bounded either way. */
	n = host->instances;
	explore = n >= REMOTE_HOST_MIN_INSTANCES &&
		  ((n - REMOTE_HOST_MIN_INSTANCES) % EXPLORE_EVERY) == 0 &&
		  host->quiet < QUIET_MAX;
	best = host->best;
	learn = explore || learn_nth(n);

	/* What this connection runs unless we switch it; rules 1 and 2. */
	if ((host->flags & HOST_LOSSY) && candidate(CC_BBR)) {
		alg = CC_BBR;
		reason = REASON_REMEMBER;
		explore = false;	/* no experiments on a lossy path */
		learn = true;		/* every close may clear "lossy" */
	} else if (best < NR_CC || explore) {
		cur = current_alg(skops);
		known = true;
		alg = cur;
		if (best < NR_CC && best != cur && distinct(host, cur, best)) {
			alg = best;
			reason = REASON_COST;
		}
	} else {
		/* The usual case: nothing distinguishes the candidates. */
		enable_callbacks(skops, false, learn);
		return;
	}
	if (explore && ncandidates() > 1) {
		__u32 other = least_sampled(host, alg);

		if (other < NR_CC) {
			reason = host->metrics[cc_idx(other)].metric_count ?
				 REASON_EXPLORE : REASON_UNTRIED;
			alg = other;
		}
	}
	if (!known) {
		cur = current_alg(skops);
		known = true;
	}
	if (alg >= NR_CC || alg == cur) {
		enable_callbacks(skops, cur == CC_BBR, learn);
		return;
	}
	if (bpf_map_lookup_elem(&netns_disabled, &key.netns_cookie))
		return;		/* an administrator decides here */
	if (set_alg(skops, alg)) {
		enable_callbacks(skops, cur == CC_BBR, learn);
		return;
	}
	stat_inc(alg);
	send_event(skops, &key, host, alg, cur, reason, ncandidates(),
		   HOST_REPORTED_FIRST);
	if (reason == REASON_COST)
		send_event(skops, &key, host, alg, cur, reason, ncandidates(),
			   HOST_REPORTED_LEARNED);
	enable_callbacks(skops, alg == CC_BBR, learn);
}

static __always_inline bool lossy(struct bpf_sock_ops *skops)
{
	return skops->total_retrans > (skops->segs_out >> DROP_SHIFT);
}

static __always_inline void on_retrans(struct bpf_sock_ops *skops)
{
	struct remote_host_key key = {};
	struct remote_host *host;
	struct conn_state *st;
	struct tcp_sock *tp;
	struct bpf_sock *sk = skops->sk;
	__u8 prev;

	if (!sk || !lossy(skops) || !candidate(CC_BBR))
		return;
	prev = current_alg(skops);
	if (prev == CC_BBR) {
		/* bbr does not back off on random loss: nothing to do. */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags &
					  ~BPF_SOCK_OPS_RETRANS_CB_FLAG);
		return;
	}
	host_key(skops, &key);
	if (bpf_map_lookup_elem(&netns_disabled, &key.netns_cookie))
		return;		/* an administrator decides here */
	st = bpf_sk_storage_get(&conn_state_map, sk, NULL,
				BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return;

	/* Thin flows (few packets in flight) recover by RTO; linear timeouts
	 * keep a lossy thin flow responsive. The kernel applies the option
	 * only while the flow is thin. Skip it where the namespace already
	 * enables it for every socket. */
	tp = bpf_skc_to_tcp_sock(sk);
	if (tp && !(st->flags & CONN_THIN_LTO)) {
		struct net *net = bpftune_sk_net((struct sock *)tp);
		__u8 ns_lto = BPF_CORE_READ(net, ipv4.sysctl_tcp_thin_linear_timeouts);
		int one = 1;

		if (!ns_lto &&
		    bpf_setsockopt(skops, SOL_TCP, TCP_THIN_LINEAR_TIMEOUTS,
				   &one, sizeof(one)) == 0) {
			st->flags |= CONN_THIN_LTO;
			stat_inc(STAT_THIN_LTO);
		}
	}

	if (set_alg(skops, CC_BBR))
		return;
	stat_inc(CC_BBR);
	stat_inc(STAT_LOSS);
	st->flags |= CONN_SWITCHED;
	/* No more RETRANS callbacks; a STATE callback at close in any case,
	 * to fold this connection's loss into the destination's rate (it may
	 * not have been one of the connections learned from). */
	bpf_sock_ops_cb_flags_set(skops, (skops->bpf_sock_ops_cb_flags &
					  ~BPF_SOCK_OPS_RETRANS_CB_FLAG) |
				  BPF_SOCK_OPS_STATE_CB_FLAG);

	host = bpf_map_lookup_elem(&remote_host_map, &key);
	if (!host)
		return;
	host->flags |= HOST_LOSSY;
	send_event(skops, &key, host, CC_BBR, prev, REASON_LOSS, 0,
		   HOST_REPORTED_LOSS);
}

static __always_inline void on_close(struct bpf_sock_ops *skops)
{
	struct remote_host_key key = {};
	struct remote_host *host;
	struct cc_metric *m;
	__u64 rate, cost, min_rtt, hmin, hmax, dev;
	__u32 alg, shift = bpftune_shift();
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return;
	host_key(skops, &key);
	host = bpf_map_lookup_elem(&remote_host_map, &key);
	if (!host)
		return;

	/* The destination stays "lossy" (new connections start on bbr) while
	 * its recent loss rate is above the threshold; once it drops below,
	 * the learned costs decide again. */
	host->retrans_sum = host->retrans_sum - (host->retrans_sum >> shift) +
			    skops->total_retrans;
	host->segs_sum = host->segs_sum - (host->segs_sum >> shift) +
			 skops->segs_out;
	if (host->retrans_sum > (host->segs_sum >> DROP_SHIFT))
		host->flags |= HOST_LOSSY;
	else
		host->flags &= ~HOST_LOSSY;

	/* No rate sample (e.g. no data was acknowledged): nothing to learn. */
	min_rtt = skops->rtt_min;
	if (!min_rtt || min_rtt == 0xffffffff || !skops->rate_interval_us) {
		if (host->quiet < QUIET_MAX)
			host->quiet++;
		return;
	}
	if (host->quiet)
		host->quiet = 0;
	/* Mixed connections (switched on loss) say nothing clean about
	 * either algorithm; only they have socket storage. */
	if (skops->total_retrans) {
		struct conn_state *st = bpf_sk_storage_get(&conn_state_map, sk,
							   NULL, 0);

		if (st && (st->flags & CONN_SWITCHED))
			return;
	}
	alg = current_alg(skops);
	if (alg >= NR_CC)
		return;
	rate = (__u64)skops->rate_delivered * skops->mss_cache * 1000000ULL /
	       skops->rate_interval_us;

	if (!host->min_rtt || min_rtt < host->min_rtt)
		host->min_rtt = min_rtt;
	if (rate > host->max_rate)
		host->max_rate = rate;
	m = &host->metrics[cc_idx(alg)];
	if (!m->min_rtt || min_rtt < m->min_rtt)
		m->min_rtt = min_rtt;
	if (rate > m->max_rate)
		m->max_rate = rate;

	hmin = host->min_rtt;
	hmax = host->max_rate;
	cost = 0;
	if (hmin && min_rtt > hmin)
		cost += (min_rtt - hmin) * RL_SCALE / hmin;
	if (hmax && rate < hmax)
		cost += (hmax - rate) * RL_SCALE / hmax;

	if (!m->metric_count) {
		m->metric_value = cost;
	} else {
		dev = cost > m->metric_value ? cost - m->metric_value :
					       m->metric_value - cost;
		m->metric_dev = m->metric_count == 1 ?
				dev : ewma(m->metric_dev, dev, shift);
		m->metric_value = ewma(m->metric_value, cost, shift);
	}
	m->metric_count++;
	host->best = best_candidate(host);
}

/* The time-wait part: one more case of this program, not a program of its
 * own (see tw_reuse.bpf.h). */
#include "tw_reuse.bpf.h"

SEC("sockops")
int bpftune_conn_tuner(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		tw_reuse_on_connect(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		on_established(skops);
		break;
	case BPF_SOCK_OPS_RETRANS_CB:
		on_retrans(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_FIN_WAIT1 ||
		    skops->args[1] == BPF_TCP_CLOSE_WAIT ||
		    (skops->args[1] == BPF_TCP_CLOSE &&
		     skops->args[0] == BPF_TCP_ESTABLISHED)) {
			on_close(skops);
			/* Learned once per connection: the closing states
			 * that follow need no more calls. Only the flags
			 * this program enabled are cleared. */
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags &
						  ~(BPF_SOCK_OPS_STATE_CB_FLAG |
						    BPF_SOCK_OPS_RETRANS_CB_FLAG));
		}
		break;
	default:
		break;
	}
	return 1;
}
