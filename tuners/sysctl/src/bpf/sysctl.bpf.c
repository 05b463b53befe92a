/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * sysctl.bpf.c: see every sysctl *write* by processes in the daemon's cgroup
 * (the whole system when it is the cgroup2 root), and report the sysctl's
 * name, the writer's pid and its network namespace. Never blocks a write.
 */
#include "bpftune_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Long enough for the names tuners declare ("net/ipv4/tcp_no_ssthresh_metrics_save"
 * and the like); bpf_sysctl_get_name returns -E2BIG if it had to truncate. */
#define SYSCTL_NAME_MAX	BPFTUNE_MAX_NAME

SEC("cgroup/sysctl")
int bpftune_sysctl_write(struct bpf_sysctl *ctx)
{
	struct bpftune_event event = {};
	struct task_struct *task;
	struct net *net;
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	long len;

	if (!ctx->write || pid == bpftune_pid)
		return 1;

	len = bpf_sysctl_get_name(ctx, event.payload.str, sizeof(event.payload.str), 0);
	if (len < 0)
		return 1;	/* truncated: longer than any tunable we manage */

	task = bpf_get_current_task_btf();
	net = BPF_CORE_READ(task, nsproxy, net_ns);
	event.netns_cookie = bpftune_net_cookie(net);
	event.netns_inum = bpftune_net_inum(net);
	event.pid = pid;
	event.scenario_id = 0;
	bpftune_send(&event);
	return 1;
}
