/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * sf_shim.h - inserting and stripping the emulated NIC's mark shim
 * (struct sf_shim, sf_abi.h) right after the MAC addresses.  The emulated NIC
 * (sf_nic.bpf.c) inserts it; the switch's XDP program (sf_xdp.bpf.c) strips
 * it.  Both keep every byte of the frame: only the 8 shim bytes come and go.
 */
#ifndef SF_SHIM_H
#define SF_SHIM_H

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "sf_abi.h"

#define SF_MAC_LEN 12 /* destination and source addresses */

/* Moves the head of the frame by 'delta' bytes (negative: grows it) and the
 * 12 MAC bytes with it, so they stay at the front.  0 on success. */
static __always_inline int sf_move_macs(struct xdp_md *ctx, int delta)
{
	__u8 macs[SF_MAC_LEN];
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (data + SF_MAC_LEN > data_end)
		return -1;
	__builtin_memcpy(macs, data, SF_MAC_LEN);
	if (bpf_xdp_adjust_head(ctx, delta))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + SF_MAC_LEN > data_end)
		return -1; /* cannot happen: the frame only got longer or lost the shim */
	__builtin_memcpy(data, macs, SF_MAC_LEN);
	return 0;
}

/* Inserts a shim carrying 'mark' (host order).  0 on success; on failure
 * (no headroom) the frame is unchanged. */
static __always_inline int sf_shim_insert(struct xdp_md *ctx, __u32 mark)
{
	struct sf_shim *shim;
	void *data, *data_end;

	if (sf_move_macs(ctx, -(int)sizeof(struct sf_shim)))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	shim = data + SF_MAC_LEN;
	if ((void *)(shim + 1) > data_end)
		return -1;
	shim->ethertype = bpf_htons(SF_SHIM_ETHERTYPE);
	shim->version = SF_SHIM_VERSION;
	shim->pad = 0;
	shim->mark = bpf_htonl(mark);
	return 0;
}

#define SF_SHIM_NONE 0      /* no shim: the frame is as it came */
#define SF_SHIM_STRIPPED 1  /* *mark holds the mark; the shim is gone */
#define SF_SHIM_BAD 2       /* a shim EtherType, but cut short or an
			     * unknown version: left in place */

/* Reads and strips a shim if the frame has one. */
static __always_inline int sf_shim_strip(struct xdp_md *ctx, __u32 *mark)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct sf_shim *shim = data + SF_MAC_LEN;

	if (data + SF_MAC_LEN + 2 > data_end)
		return SF_SHIM_NONE;
	if (shim->ethertype != bpf_htons(SF_SHIM_ETHERTYPE))
		return SF_SHIM_NONE;
	/* The shim and the frame's own EtherType after it. */
	if ((void *)(shim + 1) + 2 > data_end || shim->version != SF_SHIM_VERSION)
		return SF_SHIM_BAD;
	*mark = bpf_ntohl(shim->mark);
	if (sf_move_macs(ctx, (int)sizeof(struct sf_shim)))
		return SF_SHIM_BAD;
	return SF_SHIM_STRIPPED;
}

#endif /* SF_SHIM_H */
