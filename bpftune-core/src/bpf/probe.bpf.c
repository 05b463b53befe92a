/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * probe.bpf.c: one tiny program per hook type the tuners rely on. The daemon
 * loads (and attaches) each on its own to learn what this kernel supports.
 * It also carries struct bpftune_event into BTF for the Rust event type.
 */
#include "bpftune_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

__u64 probe_hits = 0;

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(probe_tp_btf, const struct sock *sk, const int oldstate, const int newstate)
{
	__sync_fetch_and_add(&probe_hits, 1);
	return 0;
}

SEC("raw_tp/inet_sock_set_state")
int probe_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	__sync_fetch_and_add(&probe_hits, 1);
	return 0;
}

SEC("sockops")
int probe_sockops(struct bpf_sock_ops *ops)
{
	return 1;
}

SEC("cgroup/sysctl")
int probe_sysctl(struct bpf_sysctl *ctx)
{
	return 1;
}

SEC("iter/tcp")
int probe_iter_tcp(struct bpf_iter__tcp *ctx)
{
	return 0;
}

SEC("fentry/tcp_rcv_space_adjust")
int BPF_PROG(probe_fentry, struct sock *sk)
{
	__sync_fetch_and_add(&probe_hits, 1);
	return 0;
}
