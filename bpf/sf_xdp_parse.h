/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * sf_xdp_parse.h - parses a frame into the flow key, in XDP.
 *
 * This is the same parser as userspace's (userspace/src/parse.cc), rule for
 * rule, so that a key XDP hands to userspace is the key userspace would have
 * built; tests/bpf compares the two on the same frames.  The rules:
 *  - nothing outside [data, data_end) is read;
 *  - a header is taken whole or not at all, and its offset is recorded only
 *    when the whole header lies inside the frame and inside the bounds the
 *    layer below declares;
 *  - a malformed packet gets a key of whatever parsed and a parse flag.
 *
 * Offsets are kept below SF_XDP_MAX_LEN (frames longer than that are left to
 * userspace), which keeps every packet pointer provably in range for the
 * verifier.
 */
#ifndef SF_XDP_PARSE_H
#define SF_XDP_PARSE_H

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "sf_abi.h"

#define SF_XDP_MAX_LEN 0x3fff

#define SF_ETH_P_IPV4 0x0800
#define SF_ETH_P_ARP 0x0806
#define SF_ETH_P_VLAN 0x8100
#define SF_ETH_P_QINQ 0x88a8
#define SF_ETH_P_IPV6 0x86dd

#define SF_IPPROTO_HOPOPTS 0
#define SF_IPPROTO_ICMP 1
#define SF_IPPROTO_TCP 6
#define SF_IPPROTO_UDP 17
#define SF_IPPROTO_ROUTING 43
#define SF_IPPROTO_FRAGMENT 44
#define SF_IPPROTO_AH 51
#define SF_IPPROTO_ICMPV6 58
#define SF_IPPROTO_DSTOPTS 60

#define SF_MAX_VLAN_TAGS 2
#define SF_MAX_IPV6_EXT_HEADERS 8

struct sf_parse {
	void *data;
	void *data_end;
	__u32 len;
	struct sf_flow_key *key;
	__u16 l3_ofs;
	__u16 l4_ofs;
	__u16 payload_ofs;
	__u16 flags;
};

/* True when [ofs, ofs + n) is inside the frame; this is the comparison the
 * verifier needs before any access at data + ofs. */
#define SF_HAVE(p, ofs, n) ((p)->data + (ofs) + (n) <= (p)->data_end)

static __always_inline __u16 sf_load_be16(const __u8 *b)
{
	return (__u16)(b[0] << 8 | b[1]);
}

static __always_inline void sf_parse_l4(struct sf_parse *p, __u8 proto, __u32 ofs,
					__u32 end, int is_ipv6)
{
	struct sf_flow_key *key = p->key;
	__u32 avail, header_len;
	__u8 *l4;

	ofs &= SF_XDP_MAX_LEN;
	if (ofs > end)
		return;
	avail = end - ofs;
	l4 = p->data + ofs;

	switch (proto) {
	case SF_IPPROTO_TCP:
		if (avail < 20 || !SF_HAVE(p, ofs, 20)) {
			p->flags |= SF_PARSE_TRUNCATED_L4;
			return;
		}
		header_len = (l4[12] >> 4) * 4u;
		if (header_len < 20) {
			p->flags |= SF_PARSE_BAD_L4;
			return;
		}
		if (header_len > avail) {
			p->flags |= SF_PARSE_TRUNCATED_L4;
			return;
		}
		__builtin_memcpy(&key->tp_src, l4, 2);
		__builtin_memcpy(&key->tp_dst, l4 + 2, 2);
		key->tcp_flags = bpf_htons(sf_load_be16(l4 + 12) & 0x0fff);
		break;
	case SF_IPPROTO_UDP: {
		__u32 udp_len;

		header_len = 8;
		if (avail < 8 || !SF_HAVE(p, ofs, 8)) {
			p->flags |= SF_PARSE_TRUNCATED_L4;
			return;
		}
		udp_len = sf_load_be16(l4 + 4);
		if (udp_len < 8 || udp_len > avail)
			p->flags |= SF_PARSE_BAD_L4;
		__builtin_memcpy(&key->tp_src, l4, 2);
		__builtin_memcpy(&key->tp_dst, l4 + 2, 2);
		break;
	}
	case SF_IPPROTO_ICMP:
	case SF_IPPROTO_ICMPV6:
		if ((proto == SF_IPPROTO_ICMPV6) != is_ipv6)
			return; /* ICMP over IPv6 and the like: opaque */
		header_len = 8;
		if (avail < 8 || !SF_HAVE(p, ofs, 8)) {
			p->flags |= SF_PARSE_TRUNCATED_L4;
			return;
		}
		key->tp_src = bpf_htons(l4[0]); /* type */
		key->tp_dst = bpf_htons(l4[1]); /* code */
		break;
	default:
		return;
	}
	p->l4_ofs = ofs;
	p->payload_ofs = ofs + header_len;
}

static __always_inline void sf_parse_arp(struct sf_parse *p, __u32 ofs)
{
	struct sf_flow_key *key = p->key;
	__u8 *arp = p->data + ofs;

	if (!SF_HAVE(p, ofs, 8)) {
		p->flags |= SF_PARSE_TRUNCATED_L3;
		return;
	}
	/* Only Ethernet/IPv4 ARP has addresses the key can hold. */
	if (sf_load_be16(arp) != 1 || sf_load_be16(arp + 2) != SF_ETH_P_IPV4 ||
	    arp[4] != 6 || arp[5] != 4)
		return;
	if (!SF_HAVE(p, ofs, 28)) {
		p->flags |= SF_PARSE_TRUNCATED_L3;
		return;
	}
	p->l3_ofs = ofs;
	key->nw_proto = arp[7]; /* low byte of the opcode */
	__builtin_memcpy(&key->nw_src[0], arp + 14, 4);
	__builtin_memcpy(&key->nw_dst[0], arp + 24, 4);
}

static __always_inline void sf_parse_ipv4(struct sf_parse *p, __u32 ofs)
{
	struct sf_flow_key *key = p->key;
	__u32 header_len, total_len, avail, end;
	__u16 frag;
	__u8 *ip = p->data + ofs;

	if (!SF_HAVE(p, ofs, 20)) {
		p->flags |= SF_PARSE_TRUNCATED_L3;
		return;
	}
	avail = p->len - ofs;
	header_len = (ip[0] & 0x0f) * 4u;
	if ((ip[0] >> 4) != 4 || header_len < 20) {
		p->flags |= SF_PARSE_BAD_L3;
		return;
	}
	if (header_len > avail) {
		p->flags |= SF_PARSE_TRUNCATED_L3;
		return;
	}
	p->l3_ofs = ofs;
	key->nw_tos = ip[1];
	key->nw_proto = ip[9];
	__builtin_memcpy(&key->nw_src[0], ip + 12, 4);
	__builtin_memcpy(&key->nw_dst[0], ip + 16, 4);

	/* The datagram ends at its total length, which excludes Ethernet
	 * padding; a length that lies is flagged and only what is there is
	 * trusted. */
	total_len = sf_load_be16(ip + 2);
	if (total_len < header_len || total_len > avail)
		p->flags |= SF_PARSE_BAD_L3;

	frag = sf_load_be16(ip + 6);
	if (frag & 0x3fff) {
		key->nw_frag = SF_FRAG_ANY;
		if (frag & 0x1fff) {
			key->nw_frag |= SF_FRAG_LATER; /* no L4 header here */
			return;
		}
	}
	if (total_len < header_len)
		return;
	end = ofs + (total_len < avail ? total_len : avail);
	sf_parse_l4(p, ip[9], ofs + header_len, end, 0);
}

static __always_inline int sf_is_ipv6_ext(__u8 next)
{
	return next == SF_IPPROTO_HOPOPTS || next == SF_IPPROTO_ROUTING ||
	       next == SF_IPPROTO_DSTOPTS || next == SF_IPPROTO_FRAGMENT ||
	       next == SF_IPPROTO_AH;
}

static __always_inline void sf_parse_ipv6(struct sf_parse *p, __u32 ofs)
{
	struct sf_flow_key *key = p->key;
	__u32 avail, l3_len, end, cur;
	__u8 *ip = p->data + ofs;
	__u8 next;
	int n;

	if (!SF_HAVE(p, ofs, 40)) {
		p->flags |= SF_PARSE_TRUNCATED_L3;
		return;
	}
	if ((ip[0] >> 4) != 6) {
		p->flags |= SF_PARSE_BAD_L3;
		return;
	}
	avail = p->len - ofs;
	p->l3_ofs = ofs;
	key->nw_tos = (__u8)((ip[0] & 0x0f) << 4 | ip[1] >> 4); /* traffic class */
	__builtin_memcpy(key->nw_src, ip + 8, 16);
	__builtin_memcpy(key->nw_dst, ip + 24, 16);

	l3_len = 40 + sf_load_be16(ip + 4);
	if (l3_len > avail) {
		p->flags |= SF_PARSE_BAD_L3;
		l3_len = avail;
	}
	end = ofs + l3_len;

	next = ip[6];
	cur = ofs + 40;
	for (n = 0; n <= SF_MAX_IPV6_EXT_HEADERS; n++) {
		__u32 ext_len;
		__u8 *ext;

		if (!sf_is_ipv6_ext(next))
			break;
		/* On a broken chain nw_proto names the header we could not
		 * get past. */
		cur &= SF_XDP_MAX_LEN;
		if (n == SF_MAX_IPV6_EXT_HEADERS || cur > end || end - cur < 8 ||
		    !SF_HAVE(p, cur, 8)) {
			key->nw_proto = next;
			p->flags |= SF_PARSE_BAD_EXT_HDR;
			return;
		}
		ext = p->data + cur;
		if (next == SF_IPPROTO_FRAGMENT) {
			__u16 off_flags = sf_load_be16(ext + 2);

			ext_len = 8;
			if (off_flags & 0xfff9) {
				key->nw_frag = SF_FRAG_ANY;
				if (off_flags & 0xfff8) {
					/* Fragment data follows, not headers. */
					key->nw_frag |= SF_FRAG_LATER;
					key->nw_proto = ext[0];
					return;
				}
			}
		} else if (next == SF_IPPROTO_AH) {
			ext_len = (ext[1] + 2u) * 4;
		} else {
			ext_len = (ext[1] + 1u) * 8;
		}
		if (ext_len > end - cur) {
			key->nw_proto = next;
			p->flags |= SF_PARSE_BAD_EXT_HDR;
			return;
		}
		next = ext[0];
		cur += ext_len;
	}
	key->nw_proto = next;
	sf_parse_l4(p, next, cur, end, 1);
}

static __always_inline int sf_is_vlan_tpid(__u16 type)
{
	return type == SF_ETH_P_VLAN || type == SF_ETH_P_QINQ;
}

/* Parses the frame into p->key (which the caller zeroed, in_port aside). */
static __always_inline void sf_parse_frame(struct sf_parse *p)
{
	struct sf_flow_key *key = p->key;
	__u8 *eth = p->data;
	__u32 type_ofs = 12;
	__u16 type;
	int tags;

	p->l3_ofs = SF_NO_OFFSET;
	p->l4_ofs = SF_NO_OFFSET;
	p->payload_ofs = SF_NO_OFFSET;
	p->flags = 0;

	if (!SF_HAVE(p, 0, 14)) {
		p->flags |= SF_PARSE_TRUNCATED_L2;
		return;
	}
	__builtin_memcpy(key->dl_dst, eth, 6);
	__builtin_memcpy(key->dl_src, eth + 6, 6);
	type = sf_load_be16(eth + 12);

#pragma unroll
	for (tags = 0; tags < SF_MAX_VLAN_TAGS; tags++) {
		__u16 tci;

		if (!sf_is_vlan_tpid(type))
			break;
		/* The tag's TCI and the next ethertype must both be there. */
		if (!SF_HAVE(p, type_ofs, 6)) {
			key->dl_type = bpf_htons(type);
			p->flags |= SF_PARSE_TRUNCATED_L2;
			return;
		}
		tci = sf_load_be16(eth + type_ofs + 2);
		if (tags == 0)
			key->vlan_tci = bpf_htons(tci | SF_VLAN_PRESENT);
		type_ofs += 4;
		type = sf_load_be16(eth + type_ofs);
	}
	key->dl_type = bpf_htons(type);
	/* A third tag leaves dl_type at its TPID and the rest unparsed. */
	switch (type) {
	case SF_ETH_P_IPV4:
		sf_parse_ipv4(p, type_ofs + 2);
		break;
	case SF_ETH_P_IPV6:
		sf_parse_ipv6(p, type_ofs + 2);
		break;
	case SF_ETH_P_ARP:
		sf_parse_arp(p, type_ofs + 2);
		break;
	default:
		break;
	}
}

#endif /* SF_XDP_PARSE_H */
