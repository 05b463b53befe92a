/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * types.bpf.c: no programs. The common header anchors struct bpftune_event,
 * struct bpftune_sample and the sysctl-write payload in this object's BTF,
 * so libbpf-cargo generates the Rust types the SDK decodes events with.
 */
#include "bpftune_common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";
