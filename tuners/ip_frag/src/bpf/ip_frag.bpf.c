/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * ip_frag.bpf.c: notice a network namespace whose IPv4 or IPv6 fragment
 * reassembly memory is close to its high threshold, and ask userspace
 * (which owns every decision) to raise that namespace's threshold.
 *
 * Hook: tp_btf/netif_receive_skb (fentry on ip_defrag/ipv6_frag_rcv, the
 * original's hooks, cannot load here). It fires for every received packet,
 * so non-fragments return after one 2-byte read of the IP header:
 *  - IPv4: frag_off has MF or a non-zero offset;
 *  - IPv6: the base header's next header is a Fragment header (a fragment
 *    behind other extension headers is not seen; they are rare).
 * For a fragment, read the receiving netns's fqdir {mem, high_thresh}
 * (net->ipv4.fqdir or net->ipv6.fqdir) and send an event when memory is
 * within one learning-rate step of high_thresh. Events are rate-limited per
 * (netns, tunable) by the shared helper.
 *
 * Payload slot 0: update[0] = { tunable, old = high_thresh, new = grown };
 * slot 1: update[1].old[0] = fqdir mem at the time (for the debug log).
 */
#include "bpftune_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Tunable ids: must match the Rust table (src/tables.rs). */
enum ip_frag_tunable {
	IP_FRAG_HIGH_THRESH = 0,
	IP6_FRAG_HIGH_THRESH = 1,
};

/* Scenario ids: must match the Rust table. */
enum ip_frag_scenario {
	IP_FRAG_THRESH_INCREASE = 0,
};

#define ETH_P_IP_BE	0x0008	/* htons(0x0800) */
#define ETH_P_IPV6_BE	0xDD86	/* htons(0x86DD) */
#define IP_FRAG_MASK_BE	0xFF3F	/* htons(IP_MF | IP_OFFSET) = htons(0x3fff) */
#define NEXTHDR_FRAGMENT 44

static __always_inline void check_fqdir(struct net *net, struct fqdir *fq,
					__u32 tunable)
{
	struct bpftune_event event = {};
	__s64 old[3] = {}, new[3] = {};
	long mem, high;

	if (!fq)
		return;
	mem = BPF_CORE_READ(fq, mem.counter);
	high = BPF_CORE_READ(fq, high_thresh);
	if (mem <= 0 || high <= 0)
		return;
	if (!BPFTUNE_NEARLY_FULL((__u64)mem, (__u64)high))
		return;
	old[0] = high;
	new[0] = BPFTUNE_GROW((__u64)high);
	event.payload.update[1].old[0] = mem;
	bpftune_log("ip_frag: mem %ld high_thresh %ld tunable %u\n", mem, high,
		    tunable);
	bpftune_send_net_sysctl_event(net, IP_FRAG_THRESH_INCREASE, tunable,
				      old, new, &event);
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(bpftune_ip_frag_rcv, struct sk_buff *skb)
{
	__u16 proto = skb->protocol;
	unsigned char *data;
	struct net *net;

	if (proto != ETH_P_IP_BE && proto != ETH_P_IPV6_BE)
		return 0;
	data = skb->data;
	if (proto == ETH_P_IP_BE) {
		__u16 frag_off = 0;

		/* struct iphdr: frag_off at byte 6. */
		if (bpf_probe_read_kernel(&frag_off, sizeof(frag_off), data + 6))
			return 0;
		if (!(frag_off & IP_FRAG_MASK_BE))
			return 0;
		net = BPF_CORE_READ(skb, dev, nd_net.net);
		if (!net)
			return 0;
		check_fqdir(net, BPF_CORE_READ(net, ipv4.fqdir),
			    IP_FRAG_HIGH_THRESH);
	} else {
		__u8 nexthdr = 0;

		/* struct ipv6hdr: nexthdr at byte 6. */
		if (bpf_probe_read_kernel(&nexthdr, sizeof(nexthdr), data + 6))
			return 0;
		if (nexthdr != NEXTHDR_FRAGMENT)
			return 0;
		net = BPF_CORE_READ(skb, dev, nd_net.net);
		if (!net)
			return 0;
		if (!bpf_core_field_exists(net->ipv6))
			return 0;
		check_fqdir(net, BPF_CORE_READ(net, ipv6.fqdir),
			    IP6_FRAG_HIGH_THRESH);
	}
	return 0;
}
