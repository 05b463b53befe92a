/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/* tcp_buffer.bpf.c: placeholder, being written. */
#include "bpftune_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";
