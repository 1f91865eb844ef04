// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/*
 * sf_nic.bpf.c - the emulated NIC in front of a switch port (offload/).
 *
 * Upstream kernels give XDP no flow mark from the NIC, so the NIC's TCAM is
 * emulated on the wire side of the port: this program sits on a pair of
 * interfaces between the wire and the switch's port (a bump in the wire).
 * Frames from the wire are parsed with the switch's own parser, classified
 * against the TCAM entries softflowd programmed (sf_tcam: a hash table per
 * mask, the masks tried in order, which finds what a TCAM finds because
 * megaflows never overlap), and a matching frame gets a shim with the
 * entry's mark after its MAC addresses (sf_shim.h), which the switch's XDP
 * program verifies and strips.  Frames from the switch go back to the wire
 * untouched.  Since XDP runs where the frame is received, the classification
 * costs the CPU that delivers the frame to the NIC, never the switch's.
 *
 * What a real NIC would have to provide instead: a TCAM (or flow table) over
 * L2-L4 headers whose action writes a 32-bit mark into the receive
 * descriptor, and a driver that hands the mark to XDP (e.g. an XDP metadata
 * kfunc like the RX hash and timestamp ones).
 *
 * A veth delivers frames redirected into it only when its peer has NAPI
 * running: an XDP program attached there, or GRO turned on
 * (ethtool -K PEER gro on).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "sf_abi.h"
#include "sf_xdp_parse.h"
#include "sf_shim.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SF_MAX_PORTS);
	__type(key, __u32); /* ifindex */
	__type(value, struct sf_nic_port);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sf_nic_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SF_TCAM_MAX_MASKS);
	__type(key, __u32);
	__type(value, struct sf_flow_key);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sf_tcam_masks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sf_tcam_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sf_tcam_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SF_TCAM_MAX_ENTRIES);
	__type(key, struct sf_tcam_key);
	__type(value, struct sf_tcam_action);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sf_tcam SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SF_TCAM_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sf_tcam_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sf_nic_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sf_nic_stats SEC(".maps");

/* The TCAM: the first mask (in the configured order) under which the frame's
 * key has an entry. */
static __always_inline struct sf_tcam_action *sf_tcam_lookup(const struct sf_flow_key *key,
							     const struct sf_tcam_config *config)
{
	const sf_word_t *key_words = (const sf_word_t *)key;
	struct sf_tcam_key tkey;
	__u32 i;

	__builtin_memset(&tkey, 0, sizeof(tkey));
	for (i = 0; i < SF_TCAM_MAX_MASKS; i++) {
		sf_word_t *masked = (sf_word_t *)&tkey.key;
		struct sf_tcam_action *action;
		const sf_word_t *mask;
		__u32 mask_index;
		int w;

		if (i >= config->n_masks)
			break;
		mask_index = config->order[i];
		mask = bpf_map_lookup_elem(&sf_tcam_masks, &mask_index);
		if (!mask)
			break;
#pragma unroll
		for (w = 0; w < SF_FLOW_KEY_WORDS; w++)
			masked[w] = key_words[w] & mask[w];
		tkey.mask_index = mask_index;
		action = bpf_map_lookup_elem(&sf_tcam, &tkey);
		if (action)
			return action;
	}
	return 0;
}

static __always_inline void sf_nic_classify(struct xdp_md *ctx, const struct sf_nic_port *port,
					    struct sf_nic_stats *stats)
{
	struct sf_tcam_config *config;
	struct sf_tcam_action *action;
	struct sf_flow_key key;
	struct sf_parse p;
	__u32 zero = 0, index;
	__u64 *hits;

	config = bpf_map_lookup_elem(&sf_tcam_config, &zero);
	if (!config)
		return;
	__builtin_memset(&key, 0, sizeof(key));
	key.in_port = port->ofport;
	p.data = (void *)(long)ctx->data;
	p.data_end = (void *)(long)ctx->data_end;
	p.len = p.data_end - p.data;
	p.key = &key;
	if (p.len > SF_XDP_MAX_LEN) {
		stats->unparsed++;
		return;
	}
	sf_parse_frame(&p);
	if (p.flags) {
		stats->unparsed++;
		return;
	}
	action = sf_tcam_lookup(&key, config);
	if (!action) {
		stats->tcam_miss++;
		return;
	}
	index = action->index;
	hits = bpf_map_lookup_elem(&sf_tcam_hits, &index);
	if (hits)
		(*hits)++;
	if (config->mark_per_64k < 65536 &&
	    (bpf_get_prandom_u32() & 0xffff) >= config->mark_per_64k) {
		stats->not_marked++;
		return;
	}
	if (sf_shim_insert(ctx, action->mark))
		stats->no_room++;
	else
		stats->marked++;
}

SEC("xdp")
int sf_nic(struct xdp_md *ctx)
{
	__u32 zero = 0, ifindex = ctx->ingress_ifindex;
	struct sf_nic_stats *stats;
	struct sf_nic_port *port;
	long action;

	port = bpf_map_lookup_elem(&sf_nic_ports, &ifindex);
	stats = bpf_map_lookup_elem(&sf_nic_stats, &zero);
	if (!port || !stats)
		return XDP_PASS;
	stats->rx++;
	if (port->mark)
		sf_nic_classify(ctx, port, stats);
	if (!port->peer_ifindex)
		return XDP_PASS;
	action = bpf_redirect(port->peer_ifindex, 0);
	if (action != XDP_REDIRECT)
		stats->redirect_failed++;
	return action;
}
