/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * sysctl.bpf.c: see every sysctl *write* by processes in the daemon's cgroup
 * (the whole system when it is the cgroup2 root), and report the sysctl's
 * name, the value written, the writer's pid, command name and network
 * namespace. Never blocks a write.
 *
 * What a cgroup/sysctl program may ask differs by kernel: before 5.x-6.x
 * some of bpf_get_current_pid_tgid, bpf_get_current_task_btf and
 * bpf_get_current_comm are not callable here. Userspace probes each and
 * clears the matching flag below before load; the verifier then never
 * sees the call (a branch on a read-only constant is dead code), and the
 * event says what is unknown. Without the pid, the daemon tells its own
 * writes apart by name and value.
 */
#define BPFTUNE_NO_CURRENT_PID
#include "bpftune_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by userspace from helper probes (see src/lib.rs). */
volatile const bool have_pid_helper = true;
volatile const bool have_task_helper = true;
volatile const bool have_comm_helper = true;

SEC("cgroup/sysctl")
int bpftune_sysctl_write(struct bpf_sysctl *ctx)
{
	struct bpftune_event event = {};
	struct bpftune_sysctl_write *w = &event.payload.sysctl_write;
	struct task_struct *task;
	struct net *net;
	__u32 pid = 0;
	long len;

	if (!ctx->write)
		return 1;
	if (have_pid_helper) {
		pid = bpf_get_current_pid_tgid() >> 32;
		if (pid == bpftune_pid)
			return 1;
		w->flags |= BPFTUNE_WRITE_PID_KNOWN;
	}

	/* -E2BIG: longer than any tunable we manage. */
	len = bpf_sysctl_get_name(ctx, w->name, sizeof(w->name), 0);
	if (len < 0)
		return 1;
	if (bpf_sysctl_get_new_value(ctx, w->value, sizeof(w->value)) >= 0)
		w->flags |= BPFTUNE_WRITE_VALUE_KNOWN;
	if (have_comm_helper && !bpf_get_current_comm(w->comm, sizeof(w->comm)))
		w->flags |= BPFTUNE_WRITE_COMM_KNOWN;

	if (have_task_helper) {
		task = bpf_get_current_task_btf();
		net = BPF_CORE_READ(task, nsproxy, net_ns);
		event.netns_cookie = bpftune_net_cookie(net);
		event.netns_inum = bpftune_net_inum(net);
		w->flags |= BPFTUNE_WRITE_NETNS_KNOWN;
	} else {
		event.netns_cookie = BPFTUNE_NETNS_UNKNOWN;
	}
	event.pid = pid;
	event.scenario_id = 0;
	bpftune_send(&event);
	return 1;
}
