// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/*
 * sf_xdp.bpf.c - SoftFlow's XDP program.
 *
 * For every frame on a switch port: parse L2-L4 into the flow key, look up the
 * per-CPU EMC and then the stage-0 megaflow mirror (tuple-space search over
 * the active masks, most hit first) -- or, on a port with NIC hints, verify
 * the emulated NIC's mark and skip both -- write the result into the XDP metadata
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
#include "sf_shim.h"

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

/* A NIC mark is used only when the entry it names exists, is still the
 * generation the NIC marked with, belongs to this packet's datapath and the
 * packet matches the megaflow's masked key (all of it: the TCAM may have
 * matched on fewer fields).  Anything else falls back to the lookup. */
static __always_inline int sf_verify_hint(struct sf_xdp_meta *m, __u32 mark,
					  struct sf_xdp_stats *stats)
{
	const sf_word_t *key_words = (const sf_word_t *)&m->key;
	const sf_word_t *want, *mask;
	__u32 index = SF_MARK_INDEX(mark);
	struct sf_hint *hint;
	__u64 diff = 0;
	int w;

	hint = bpf_map_lookup_elem(&sf_hints, &index);
	if (!hint || hint->generation == 0) {
		stats->hint_unknown++;
		return 0;
	}
	if ((hint->generation & ((1u << SF_MARK_GENERATION_BITS) - 1)) !=
	    SF_MARK_GENERATION(mark)) {
		stats->hint_stale++;
		return 0;
	}
	want = (const sf_word_t *)&hint->key;
	mask = (const sf_word_t *)&hint->mask;
#pragma unroll
	for (w = 0; w < SF_FLOW_KEY_WORDS; w++)
		diff |= (key_words[w] & mask[w]) ^ want[w];
	if (diff || hint->datapath != m->datapath) {
		stats->hint_mismatch++;
		return 0;
	}
	m->ref = hint->ref;
	stats->hint_hits++;
	return 1;
}

/* sf_take_mark and sf_resolve are global functions: the verifier checks
 * each once, and the paths through the parser do not multiply by the ways a
 * mark can come and go. */

#define SF_MARKED (1ull << 32) /* sf_take_mark: a mark (in the low 32 bits) */

/* Strips the NIC's shim from the frame on a port with hints; returns
 * SF_MARKED | its mark, or 0 (no shim, or one not to be trusted).  Any mark
 * is checked, 0 too: the NIC never sends one, but a forged shim might. */
__noinline __u64 sf_take_mark(struct xdp_md *ctx, __u32 port_flags)
{
	struct sf_xdp_stats *stats;
	__u32 zero = 0, mark = 0;
	int shim;

	stats = bpf_map_lookup_elem(&sf_xdp_stats, &zero);
	if (!ctx || !stats || !(port_flags & SF_PORT_HINTS))
		return 0;
	shim = sf_shim_strip(ctx, &mark);
	if (shim == SF_SHIM_STRIPPED) {
		stats->hint_marked++;
		return SF_MARKED | mark;
	}
	if (shim == SF_SHIM_BAD)
		stats->hint_malformed++;
	return 0;
}

/* The result for a parsed frame: its NIC mark when that checks out, else the
 * EMC and megaflow lookups. */
__noinline int sf_resolve(struct sf_xdp_meta *m, __u64 mark, __u32 parse_flags)
{
	struct sf_xdp_stats *stats;
	__u32 zero = 0;

	stats = bpf_map_lookup_elem(&sf_xdp_stats, &zero);
	if (!m || !stats)
		return SF_XDP_MISS;
	if (mark && parse_flags) {
		stats->hint_malformed++; /* a key from a broken frame proves nothing */
		mark = 0;
	}
	if (mark && sf_verify_hint(m, (__u32)mark, stats))
		return SF_XDP_HINT_HIT;
	return sf_lookup(m, stats);
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
	__u64 mark;

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

	mark = sf_take_mark(ctx, port->flags);

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
		m.result = sf_resolve(&m, mark, p.flags);
		if (m.result == SF_XDP_EMC_HIT)
			stats->emc_hits++;
		else if (m.result == SF_XDP_MEGAFLOW_HIT)
			stats->megaflow_hits++;
		else if (m.result == SF_XDP_MISS)
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
