// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/*
 * sf_reflect.bpf.c - the bare I/O programs of the traffic tools: the ceilings
 * SoftFlow is compared against (EVALUATION.md) and sf-pktgen's receive side.
 *
 *   sf_reflect       swaps the Ethernet source and destination addresses and
 *                    sends the frame back out with XDP_TX
 *                    (sf-echo --mode xdp-tx);
 *   sf_xsk_redirect  redirects every frame to the AF_XDP socket of its RX
 *                    queue (sf-echo --mode afxdp, sf-pktgen); XDP_PASS when
 *                    that queue has no socket.
 *
 * Each counter is a single-entry per-CPU array of its own, so userspace finds
 * it by name in the skeleton and no value layout is shared by hand.  The maps
 * are not pinned: every tool instance has its own.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SF_REFLECT_MAX_QUEUES 64

struct sf_counter {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
};

/* Frames sent back with XDP_TX. */
struct sf_counter sf_reflected SEC(".maps");
/* Frames too short for an Ethernet header (XDP_DROP). */
struct sf_counter sf_reflect_short SEC(".maps");
/* Frames on a queue without a socket (XDP_PASS). */
struct sf_counter sf_redirect_missed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, SF_REFLECT_MAX_QUEUES);
	__type(key, __u32); /* RX queue */
	__type(value, __u32);
} sf_reflect_xsks SEC(".maps");

static __always_inline void sf_count(void *map)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(map, &zero);

	if (n)
		*n += 1;
}

SEC("xdp")
int sf_reflect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 mac[ETH_ALEN];

	if ((void *)(eth + 1) > data_end) {
		sf_count(&sf_reflect_short);
		return XDP_DROP;
	}
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	sf_count(&sf_reflected);
	return XDP_TX;
}

SEC("xdp")
int sf_xsk_redirect(struct xdp_md *ctx)
{
	int action =
	    bpf_redirect_map(&sf_reflect_xsks, ctx->rx_queue_index, XDP_PASS);

	if (action == XDP_PASS)
		sf_count(&sf_redirect_missed);
	return action;
}
