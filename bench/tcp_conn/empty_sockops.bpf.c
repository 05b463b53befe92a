/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * empty_sockops.bpf.c: the cheapest possible sockops program. The tcp_conn
 * benchmark attaches it to the same cgroup as the tuner to measure the
 * kernel's fixed cost of running any sockops program on every connection,
 * which the tuner cannot avoid and the original bpftune pays as well.
 */
#include <linux/bpf.h>

int empty_sockops(struct bpf_sock_ops *skops) __attribute__((section("sockops"), used));
int empty_sockops(struct bpf_sock_ops *skops)
{
	return 1;
}

char LICENSE[] __attribute__((section("license"), used)) = "GPL";
