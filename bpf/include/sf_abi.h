/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * sf_abi.h - the one ABI shared by the XDP program (bpf/) and userspace (C++).
 *
 * Everything that crosses the BPF/userspace boundary is defined here exactly
 * once: the flow key, the key hash, and (with the AF_XDP datapath) the map
 * keys/values and the XDP->AF_XDP metadata.  Fixed-width types, explicit
 * padding, and size/offset asserts on both sides.  Never mirror a struct by
 * hand.
 */
#ifndef SF_ABI_H
#define SF_ABI_H

#include <linux/types.h>

#ifdef __cplusplus
#define SF_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
extern "C" {
#else
#define SF_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

/* The key viewed as 64-bit words; may_alias makes word-wise access of a
 * struct legal under strict aliasing in both C and C++. */
typedef __u64 __attribute__((__may_alias__)) sf_word_t;

/* A packet that would start stage SF_MAX_STAGES is dropped (loop bound). */
#define SF_MAX_STAGES 16

/* sf_action value of a packet that has not run any SoftFlow action yet. */
#define SF_ACTION_NONE 0

/* nw_frag bits. */
#define SF_FRAG_ANY 0x01   /* packet is an IP fragment */
#define SF_FRAG_LATER 0x02 /* ... and not the first one: no L4 header */

/* vlan_tci: 0 when the frame carries no 802.1Q tag, else the TCI with the
 * CFI bit forced on so that VLAN 0 is distinguishable from "no tag" (the
 * Open vSwitch convention). */
#define SF_VLAN_PRESENT 0x1000

/*
 * The flow key: parsed header fields plus SoftFlow metadata.
 *
 * Wire-derived fields are kept in network byte order, exactly as they appear
 * in the packet, so the XDP parser copies them without swapping.  in_port and
 * sf_metadata never appear on the wire and are host order.  ARP reuses
 * nw_src/nw_dst (SPA/TPA, IPv4 slot) and nw_proto (opcode, low byte), ICMP and
 * ICMPv6 reuse tp_src/tp_dst (type/code in network order), as Open vSwitch
 * does.  IPv4 addresses occupy the first 4 bytes of nw_src/nw_dst.
 *
 * The struct is 9 x 64-bit words; masks are the same struct, and masked
 * operations work word by word.  All padding must be zero.
 */
struct sf_flow_key {
	/* word 0: metadata */
	__u32 in_port;
	__u32 sf_metadata;
	/* word 1 */
	__u8 sf_stage;
	__u8 sf_action;
	__be16 dl_type;
	__be16 vlan_tci;
	__u8 nw_proto;
	__u8 nw_tos;
	/* words 2-3 */
	__u8 dl_dst[6];
	__u8 dl_src[6];
	__be16 tp_src;
	__be16 tp_dst;
	/* words 4-7 */
	__be32 nw_src[4];
	__be32 nw_dst[4];
	/* word 8 */
	__be16 tcp_flags;
	__u8 nw_frag;
	__u8 pad[5];
} __attribute__((aligned(8)));

#define SF_FLOW_KEY_WORDS 9

SF_STATIC_ASSERT(sizeof(struct sf_flow_key) == SF_FLOW_KEY_WORDS * 8,
	       "sf_flow_key must be 9 words");
SF_STATIC_ASSERT(__builtin_offsetof(struct sf_flow_key, dl_type) == 10,
	       "sf_flow_key layout");
SF_STATIC_ASSERT(__builtin_offsetof(struct sf_flow_key, dl_dst) == 16,
	       "sf_flow_key layout");
SF_STATIC_ASSERT(__builtin_offsetof(struct sf_flow_key, tp_src) == 28,
	       "sf_flow_key layout");
SF_STATIC_ASSERT(__builtin_offsetof(struct sf_flow_key, nw_src) == 32,
	       "sf_flow_key layout");
SF_STATIC_ASSERT(__builtin_offsetof(struct sf_flow_key, nw_dst) == 48,
	       "sf_flow_key layout");
SF_STATIC_ASSERT(__builtin_offsetof(struct sf_flow_key, tcp_flags) == 64,
	       "sf_flow_key layout");

/*
 * Key hash shared by XDP and userspace, so a hash computed in XDP can index
 * userspace's exact-match cache.  A multiply/xor-shift mix per 64-bit word
 * (the murmur3 finaliser constants); cheap in BPF (no loops over bytes) and
 * good enough for open-addressed tables.  'words' points at the key viewed
 * as SF_FLOW_KEY_WORDS 64-bit words; 'mask' may be 0 for an unmasked hash.
 */
static inline __u64 sf_hash_mix(__u64 h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

static inline __u32 sf_hash_words(const sf_word_t *words, const sf_word_t *mask)
{
	__u64 h = 0x9e3779b97f4a7c15ULL;
	int i;

#ifdef __bpf__
#pragma unroll
#endif
	for (i = 0; i < SF_FLOW_KEY_WORDS; i++) {
		__u64 w = mask ? (words[i] & mask[i]) : words[i];

		h = sf_hash_mix(h ^ w) + (__u64)i;
	}
	return (__u32)(h ^ (h >> 32));
}

#ifdef __cplusplus
}
#endif

#endif /* SF_ABI_H */
