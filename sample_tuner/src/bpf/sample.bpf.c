/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * sample.bpf.c: the smallest useful tuner program. A cgroup/sysctl program on
 * the daemon's cgroup (the whole system when it is the cgroup2 root) sends an
 * event, scenario 0, whenever a process reads kernel.core_pattern. It never
 * blocks the access. The original used fentry/proc_dostring_coredump, which
 * needs BPF trampolines; cgroup/sysctl works everywhere bpftune does.
 */
#include "bpftune_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static const char core_pattern[] = "kernel/core_pattern";

SEC("cgroup/sysctl")
int sample_core_pattern(struct bpf_sysctl *ctx)
{
	struct bpftune_event event = {};
	char name[sizeof(core_pattern)] = {};
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	int i;

	if (ctx->write || pid == bpftune_pid)
		return 1;
	if (bpf_sysctl_get_name(ctx, name, sizeof(name), 0) != sizeof(core_pattern) - 1)
		return 1;
#pragma unroll
	for (i = 0; i < sizeof(core_pattern) - 1; i++) {
		if (name[i] != core_pattern[i])
			return 1;
	}
	event.pid = pid;
	event.scenario_id = 0;
	event.netns_cookie = BPFTUNE_NETNS_UNKNOWN;
	bpftune_send(&event);
	return 1;
}
