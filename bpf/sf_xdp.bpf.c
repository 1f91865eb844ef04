// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/*
 * sf_xdp.bpf.c - SoftFlow's XDP program.
 *
 * For every frame on a switch port: parse L2-L4 into the flow key, look up the
 * per-CPU EMC and then the stage-0 megaflow mirror (tuple-space search over
 * the active masks, most hit first), write the result into the XDP metadata
 * area (struct sf_xdp_meta) and redirect to the AF_XDP socket of the frame's
 * (port, queue).  Userspace runs the actions; it verifies what it is told.
 *
 * Attach it with softflowd, or by hand:
 *   ip link set dev IF xdpdrv obj sf_xdp.bpf.o sec xdp
 * and softflowd adopts it (and its maps) when it starts on IF.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "sf_abi.h"
#include "sf_xdp_maps.h"
#include "sf_xdp_parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define READ_ONCE_U32(x) (*(volatile __u32 *)&(x))

static __always_inline int sf_key_equal(const struct sf_flow_key *a,
					const struct sf_flow_key *b)
{
	const sf_word_t *wa = (const sf_word_t *)a;
	const sf_word_t *wb = (const sf_word_t *)b;
	__u64 diff = 0;
	int i;

#pragma unroll
	for (i = 0; i < SF_FLOW_KEY_WORDS; i++)
		diff |= wa[i] ^ wb[i];
	return diff == 0;
}

/* EMC first, then the masks in the order userspace ranked them.  A megaflow
 * hit is cached in this CPU's EMC. */
static __always_inline __u8 sf_lookup(struct sf_xdp_meta *m,
				      struct sf_xdp_stats *stats)
{
	struct sf_megaflow_map_key mkey;
	struct sf_xdp_config *config;
	struct sf_emc_entry *emc;
	__u32 zero = 0, slot, i, epoch;

	config = bpf_map_lookup_elem(&sf_config, &zero);
	if (!config)
		return SF_XDP_MISS;
	/* Read once: an EMC entry must carry the epoch that was current when
	 * its megaflow was found, not one userspace bumped meanwhile. */
	epoch = READ_ONCE_U32(config->emc_epoch);

	slot = m->hash & (SF_EMC_ENTRIES - 1);
	emc = bpf_map_lookup_elem(&sf_emc, &slot);
	if (emc && emc->epoch == epoch && emc->ref.generation &&
	    emc->datapath == m->datapath && sf_key_equal(&emc->key, &m->key)) {
		m->ref = emc->ref;
		return SF_XDP_EMC_HIT;
	}

	__builtin_memset(&mkey, 0, sizeof(mkey));
	mkey.datapath = m->datapath;
	for (i = 0; i < SF_MAX_MASKS; i++) {
		const sf_word_t *key_words = (const sf_word_t *)&m->key;
		sf_word_t *masked = (sf_word_t *)&mkey.key;
		struct sf_megaflow_ref *ref;
		const sf_word_t *mask;
		__u64 *hits;
		__u32 mask_slot;
		int w;

		if (i >= config->n_masks)
			break;
		mask_slot = config->order[i];
		mask = bpf_map_lookup_elem(&sf_masks, &mask_slot);
		if (!mask)
			break;
		stats->mask_searches++;
#pragma unroll
		for (w = 0; w < SF_FLOW_KEY_WORDS; w++)
			masked[w] = key_words[w] & mask[w];
		mkey.mask_slot = mask_slot;
		ref = bpf_map_lookup_elem(&sf_megaflows, &mkey);
		if (!ref || !ref->generation)
			continue;
		m->ref = *ref;
		hits = bpf_map_lookup_elem(&sf_mask_hits, &mask_slot);
		if (hits)
			(*hits)++;
		if (emc) {
			emc->key = m->key;
			emc->datapath = m->datapath;
			emc->epoch = epoch;
			emc->ref = *ref;
		}
		return SF_XDP_MEGAFLOW_HIT;
	}
	return SF_XDP_MISS;
}

SEC("xdp")
int sf_xdp(struct xdp_md *ctx)
{
	struct sf_xdp_stats *stats;
	struct sf_xdp_meta m;
	struct sf_parse p;
	struct sf_port *port;
	__u32 zero = 0, ifindex = ctx->ingress_ifindex, queue = ctx->rx_queue_index;
	void *data, *data_end, *data_meta;
	long action;

	stats = bpf_map_lookup_elem(&sf_xdp_stats, &zero);
	if (!stats)
		return XDP_PASS;
	port = bpf_map_lookup_elem(&sf_ports, &ifindex);
	if (!port) {
		stats->not_port++;
		return XDP_PASS;
	}
	if (queue >= port->n_queues || queue >= SF_MAX_QUEUES) {
		stats->no_socket++;
		return XDP_PASS;
	}
	stats->rx++;

	__builtin_memset(&m, 0, sizeof(m));
	m.key.in_port = port->ofport;
	m.datapath = port->datapath[queue & (SF_MAX_QUEUES - 1)];

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	p.data = data;
	p.data_end = data_end;
	p.len = data_end - data;
	p.key = &m.key;
	if (p.len > SF_XDP_MAX_LEN) {
		m.result = SF_XDP_UNPARSED;
		m.l3_ofs = m.l4_ofs = m.payload_ofs = SF_NO_OFFSET;
		stats->unparsed++;
	} else {
		sf_parse_frame(&p);
		m.l3_ofs = p.l3_ofs;
		m.l4_ofs = p.l4_ofs;
		m.payload_ofs = p.payload_ofs;
		m.parse_flags = p.flags;
		if (p.flags)
			stats->malformed++;
		m.hash = sf_hash_words((const sf_word_t *)&m.key, 0);
		m.result = sf_lookup(&m, stats);
		if (m.result == SF_XDP_EMC_HIT)
			stats->emc_hits++;
		else if (m.result == SF_XDP_MEGAFLOW_HIT)
			stats->megaflow_hits++;
		else
			stats->misses++;
	}
	m.magic = SF_XDP_META_MAGIC;

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(m)) == 0) {
		data_meta = (void *)(long)ctx->data_meta;
		data = (void *)(long)ctx->data;
		if (data_meta + sizeof(m) <= data)
			__builtin_memcpy(data_meta, &m, sizeof(m));
		else
			stats->meta_failed++;
	} else {
		stats->meta_failed++;
	}

	action = bpf_redirect_map(&sf_xsks, port->xsk_base + queue, XDP_PASS);
	if (action != XDP_REDIRECT)
		stats->no_socket++;
	return action;
}
