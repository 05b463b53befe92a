/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * netns.bpf.c: report a network namespace the first time one of its TCP
 * sockets connects or listens, with its cookie, inode and the id of the
 * thread that was in it, so userspace can find a handle for it right away.
 *
 * There is no cheap hook on namespace creation here (no kprobes, no fentry;
 * the net_namespace slab tracepoints sit on the allocator's hot path), so
 * the first socket stands in for it: a namespace without TCP is found by
 * the periodic rescan instead, and death is always found by rescanning.
 * inet_sock_set_state fires a handful of times per connection; this program
 * returns after one compare for every state but SYN_SENT and LISTEN, and
 * after one LRU lookup for namespaces already reported.
 */
#include "bpftune_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define NETNS_TCP_SYN_SENT	2
#define NETNS_TCP_LISTEN	10

/* The daemon's namespace: never reported. Set before load. */
volatile const __u64 global_netns_cookie = 0;

/* Namespaces already reported. LRU: a namespace evicted here is reported
 * again, which userspace ignores; userspace deletes dead ones. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, __u8);
} netns_seen_map SEC(".maps");

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(bpftune_netns_first_socket, struct sock *sk, int oldstate, int newstate)
{
	struct bpftune_event event = {};
	struct net *net;
	__u64 cookie;
	__u8 one = 1;

	if (newstate != NETNS_TCP_SYN_SENT && newstate != NETNS_TCP_LISTEN)
		return 0;
	net = bpftune_sk_net(sk);
	cookie = bpftune_net_cookie(net);
	if (cookie == global_netns_cookie || cookie == BPFTUNE_NETNS_UNKNOWN || cookie == 0)
		return 0;
	if (bpf_map_lookup_elem(&netns_seen_map, &cookie))
		return 0;
	/* Another CPU may have reported it a moment ago. */
	if (bpf_map_update_elem(&netns_seen_map, &cookie, &one, BPF_NOEXIST))
		return 0;
	event.scenario_id = 0;
	event.netns_cookie = cookie;
	event.netns_inum = bpftune_net_inum(net);
	/* The thread, not the process: a thread may have entered the namespace
	 * on its own (setns), and /proc/<tid>/ns/net names the thread's. */
	event.pid = (__u32)bpf_get_current_pid_tgid();
	if (bpftune_send(&event) < 0)
		bpf_map_delete_elem(&netns_seen_map, &cookie);	/* try again next time */
	return 0;
}
