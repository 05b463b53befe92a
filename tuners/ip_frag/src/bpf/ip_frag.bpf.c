/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * ip_frag.bpf.c: one pass over the tasks, once per tick, reporting the
 * fragment reassembly memory and high threshold of every network namespace
 * a process lives in (struct fqdir of net->ipv4 and net->ipv6). Nothing
 * runs per packet: reassembly memory is a slow, per-namespace signal, and
 * this reads it for every namespace at once without entering any.
 *
 * Userspace runs the iterator (reads its fd) on its 1 s tick; one record
 * per thread-group leader, deduplicated there by namespace inode.
 */
#include "bpftune_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct frag_mem_record {
	__u32 inum;		/* net->ns.inum */
	__u32 has_v6;		/* 1 if net->ipv6.fqdir was read */
	__s64 mem4;		/* net->ipv4.fqdir->mem, bytes */
	__s64 high4;		/* net->ipv4.fqdir->high_thresh */
	__s64 mem6;
	__s64 high6;
};

struct frag_mem_record frag_mem_record_anchor = {};

SEC("iter/task")
int bpftune_ip_frag_mem(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct frag_mem_record r = {};
	struct fqdir *fq;
	struct net *net;

	if (!task)
		return 0;
	/* Threads share their leader's namespaces (almost always): one
	 * record per process keeps the pass short. */
	if (BPF_CORE_READ(task, pid) != BPF_CORE_READ(task, tgid))
		return 0;
	net = BPF_CORE_READ(task, nsproxy, net_ns);
	if (!net)
		return 0;
	r.inum = BPF_CORE_READ(net, ns.inum);
	fq = BPF_CORE_READ(net, ipv4.fqdir);
	if (fq) {
		r.mem4 = BPF_CORE_READ(fq, mem.counter);
		r.high4 = BPF_CORE_READ(fq, high_thresh);
	}
	fq = BPF_CORE_READ(net, ipv6.fqdir);
	if (fq) {
		r.has_v6 = 1;
		r.mem6 = BPF_CORE_READ(fq, mem.counter);
		r.high6 = BPF_CORE_READ(fq, high_thresh);
	}
	bpf_seq_write(seq, &r, sizeof(r));
	return 0;
}
