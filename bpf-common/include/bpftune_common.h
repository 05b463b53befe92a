/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * bpftune_common.h: the one include a tuner's .bpf.c needs: kernel types,
 * libbpf helpers and the bpftune contract, in the right order.
 */
#ifndef BPFTUNE_COMMON_H
#define BPFTUNE_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#ifndef EAGAIN
#define EAGAIN 11
#endif
#ifndef ENOENT
#define ENOENT 2
#endif

#include "bpftune.bpf.h"

#endif /* BPFTUNE_COMMON_H */
