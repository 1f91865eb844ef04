/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * sf_xdp_maps.h - the maps of the XDP program.  Layouts and names are in
 * sf_abi.h; every map is pinned by name so that a copy of the object attached
 * by hand (`ip link set dev IF xdpdrv obj sf_xdp.bpf.o sec xdp`) and softflowd
 * can find the same maps.
 */
#ifndef SF_XDP_MAPS_H
#define SF_XDP_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "sf_abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SF_MAX_PORTS);
	__type(key, __u32); /* ifindex */
	__type(value, struct sf_port);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sf_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, SF_MAX_XSKS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sf_xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SF_MAX_MASKS);
	__type(key, __u32);
	__type(value, struct sf_flow_key);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sf_masks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SF_MIRROR_ENTRIES);
	__type(key, struct sf_megaflow_map_key);
	__type(value, struct sf_megaflow_ref);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sf_megaflows SEC(".maps");

/* The switch's copy of the NIC's TCAM entries (offload/): what a mark must
 * agree with before it is used.  Written by userspace, read here. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SF_TCAM_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, struct sf_hint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sf_hints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sf_xdp_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sf_config SEC(".maps");

/* Per CPU, so that the XDP program can write entries without tearing them:
 * one CPU runs one XDP program at a time. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SF_EMC_ENTRIES);
	__type(key, __u32);
	__type(value, struct sf_emc_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sf_emc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SF_MAX_MASKS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sf_mask_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sf_xdp_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sf_xdp_stats SEC(".maps");

#endif /* SF_XDP_MAPS_H */
