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

/* ------------------------------------------------------------------------ */
/* Parse flags: what was wrong with a packet.  The packet still gets a key of
 * whatever parsed; it is counted and forwarded by that key.  Set by the XDP
 * parser and by userspace's parser alike. */
#define SF_PARSE_TRUNCATED_L2 (1u << 0) /* shorter than an Ethernet/VLAN header */
#define SF_PARSE_TRUNCATED_L3 (1u << 1) /* IP/ARP header cut short */
#define SF_PARSE_BAD_L3 (1u << 2)       /* bad IHL/version, a length that lies */
#define SF_PARSE_TRUNCATED_L4 (1u << 3) /* TCP/UDP/ICMP header cut short */
#define SF_PARSE_BAD_L4 (1u << 4)       /* e.g. TCP data offset < 5 */
#define SF_PARSE_BAD_EXT_HDR (1u << 5)  /* IPv6 extension chain cut short/too long */

/* Header offset meaning "this layer is absent". */
#define SF_NO_OFFSET 0xffff

/* ------------------------------------------------------------------------ */
/* The XDP program and its maps.
 *
 * Userspace owns the megaflow table; the maps below are its mirror of the
 * stage-0 megaflows (those that can match a packet fresh off the wire), which
 * userspace writes on install and removal.  The XDP program parses, looks up
 * its per-CPU EMC and then the mirror (tuple-space search over the active
 * masks, most-hit first), writes struct sf_xdp_meta in front of the frame and
 * redirects to the AF_XDP socket of its (port, queue).  Userspace trusts
 * nothing it reads there blindly: a megaflow id is used only if the
 * megaflow still exists with that generation and the key matches it.
 *
 * Map names (all pinned by name, LIBBPF_PIN_BY_NAME, so that an object
 * attached by hand with `ip link ... obj sf_xdp.bpf.o sec xdp` and softflowd
 * share them).
 */
#define SF_MAP_PORTS "sf_ports"       /* HASH ifindex -> struct sf_port */
#define SF_MAP_XSKS "sf_xsks"         /* XSKMAP xsk slot -> AF_XDP socket */
#define SF_MAP_MASKS "sf_masks"       /* ARRAY mask slot -> struct sf_flow_key */
#define SF_MAP_MEGAFLOWS "sf_megaflows" /* HASH sf_megaflow_map_key -> sf_megaflow_ref */
#define SF_MAP_CONFIG "sf_config"     /* ARRAY[1] struct sf_xdp_config */
#define SF_MAP_EMC "sf_emc"           /* PERCPU_ARRAY hash slot -> sf_emc_entry */
#define SF_MAP_MASK_HITS "sf_mask_hits" /* PERCPU_ARRAY mask slot -> __u64 */
#define SF_MAP_STATS "sf_xdp_stats"   /* PERCPU_ARRAY[1] struct sf_xdp_stats */

#define SF_XDP_PROG_NAME "sf_xdp"     /* the program's function (and BPF) name */

#define SF_MAX_PORTS 256
#define SF_MAX_QUEUES 64     /* per port */
#define SF_MAX_XSKS 1024     /* sockets across all ports */
#define SF_MAX_MASKS 32      /* masks XDP searches; more stay userspace-only */
#define SF_MAX_DATAPATHS 64  /* PMD threads */
#define SF_MIRROR_ENTRIES 65536
#define SF_EMC_ENTRIES 8192  /* per CPU; power of two */

/* A switch port: which OpenFlow port an interface is, and where its queues'
 * sockets and datapaths are. */
struct sf_port {
	__u32 ofport;
	__u32 xsk_base;   /* socket of queue q is xsk slot xsk_base + q */
	__u32 n_queues;   /* queues with a socket */
	__u32 flags;      /* SF_PORT_* */
	__u8 datapath[SF_MAX_QUEUES]; /* PMD datapath serving queue q */
};

/* sf_port.flags: frames on this port may carry the emulated NIC's mark
 * shim (softflowd --offload), which the XDP program strips and verifies. */
#define SF_PORT_HINTS 1u

/* Key of the megaflow mirror: which mask, which datapath (megaflow ids are
 * per datapath), and the masked stage-0 key. */
struct sf_megaflow_map_key {
	__u32 mask_slot;
	__u32 datapath;
	struct sf_flow_key key;
};

struct sf_megaflow_ref {
	__u32 id;
	__u32 generation; /* never 0 for a live megaflow */
};

/* The search order of the mask slots and the EMC epoch.  Userspace bumps the
 * epoch whenever it removes mirror entries, which invalidates every EMC
 * entry at once; EMC entries are written by the XDP program. */
struct sf_xdp_config {
	__u32 n_masks;
	__u32 emc_epoch;
	__u32 flags; /* SF_CONFIG_* */
	__u32 pad;
	__u8 order[SF_MAX_MASKS]; /* mask slots, most hit first */
};

/* sf_xdp_config.flags: softflowd attached this program to every port itself
 * (it was not attached by hand).  It lives as long as the program, so a
 * softflowd restarted after a crash knows the program is its own to detach,
 * even when its pins died with the crashed process's mount namespace. */
#define SF_CONFIG_OWNED_BY_SOFTFLOWD 1u

struct sf_emc_entry {
	struct sf_flow_key key;
	__u32 datapath;
	__u32 epoch; /* valid only while equal to sf_xdp_config.emc_epoch */
	struct sf_megaflow_ref ref;
};

/* XDP result codes (sf_xdp_meta.result). */
#define SF_XDP_MISS 0         /* parsed; no megaflow: userspace looks up */
#define SF_XDP_EMC_HIT 1
#define SF_XDP_MEGAFLOW_HIT 2
#define SF_XDP_UNPARSED 3     /* the key is not valid: userspace parses */
#define SF_XDP_HINT_HIT 4     /* the NIC's mark, verified: no lookup was made */

#define SF_XDP_META_MAGIC 0x53464d31 /* "SFM1" */

/*
 * Written by the XDP program immediately in front of the frame
 * (bpf_xdp_adjust_meta); in AF_XDP copy mode it arrives in the UMEM frame
 * just before the descriptor's address.  'magic' is the last field so it
 * sits next to the frame; userspace clears it after reading so that a stale
 * copy left in a reused frame is never taken for fresh metadata.
 */
struct sf_xdp_meta {
	struct sf_flow_key key; /* in_port set; SoftFlow metadata zero */
	__u32 hash;             /* sf_hash_words(key), no mask */
	struct sf_megaflow_ref ref;
	__u16 l3_ofs;
	__u16 l4_ofs;
	__u16 payload_ofs;
	__u16 parse_flags;
	__u8 result;   /* SF_XDP_* */
	__u8 datapath;
	__u16 pad;
	__u32 reserved;
	__u32 magic;
};

/* ------------------------------------------------------------------------ */
/* Offload: the emulated NIC TCAM (offload/, bpf/sf_nic.bpf.c).
 *
 * softflowd keeps the most active stage-0 megaflows in the NIC's TCAM, each
 * entry with an index (0 .. capacity-1) and a generation that changes every
 * time the index is given to another megaflow.  The NIC classifies each frame
 * from the wire against the TCAM and, on a match, inserts a shim carrying the
 * entry's mark right after the MAC addresses: it does not overwrite a byte of
 * the frame.  The switch's XDP program strips the shim and trusts the mark
 * only after checking it against sf_hints, its own copy of the entries: the
 * entry exists, its generation is the mark's, and the packet's key matches the
 * entry's masked key.  Then it skips the EMC and megaflow lookups.
 *
 * The TCAM has only the fields a NIC parser gives (offload/tcam.h: L2
 * to L4 headers and the ingress port, no SoftFlow metadata, no TCP flags, no
 * fragment bits); an entry of a megaflow that matches on other fields too
 * is the megaflow's match restricted to those fields, and the XDP program's
 * check (on the megaflow's whole mask) resolves the rest.
 */
#define SF_SHIM_ETHERTYPE 0x88b5 /* IEEE 802 local experimental EtherType 1 */
#define SF_SHIM_VERSION 1

/* Inserted between the source MAC address and the frame's EtherType (or
 * VLAN tag): dst[6] src[6] sf_shim[8] type/tag... */
struct sf_shim {
	__be16 ethertype; /* SF_SHIM_ETHERTYPE */
	__u8 version;     /* SF_SHIM_VERSION */
	__u8 pad;
	__be32 mark;      /* SF_MARK(index, generation) */
};

#define SF_TCAM_DEFAULT_ENTRIES 1024
#define SF_TCAM_MAX_ENTRIES 16384 /* a power of two: the index bits below */
#define SF_MARK_INDEX_BITS 14
#define SF_MARK_INDEX_MASK ((1u << SF_MARK_INDEX_BITS) - 1)
/* A mark is the entry index and the low 18 bits of its generation; userspace
 * never hands out a generation whose low 18 bits are 0, so a mark is never 0. */
#define SF_MARK(index, generation) \
	(((__u32)(generation) << SF_MARK_INDEX_BITS) | ((__u32)(index) & SF_MARK_INDEX_MASK))
#define SF_MARK_INDEX(mark) ((mark) & SF_MARK_INDEX_MASK)
#define SF_MARK_GENERATION(mark) ((mark) >> SF_MARK_INDEX_BITS)
#define SF_MARK_GENERATION_BITS (32 - SF_MARK_INDEX_BITS)

/* The switch's side of a TCAM entry (array sf_hints, indexed by the entry
 * index): the megaflow it stands for.  generation 0: no entry. */
struct sf_hint {
	__u32 generation; /* full generation; the mark carries its low bits */
	__u32 datapath;   /* the datapath whose megaflow 'ref' names */
	struct sf_megaflow_ref ref;
	struct sf_flow_key key;  /* the megaflow's masked key */
	struct sf_flow_key mask; /* the megaflow's whole mask */
};

#define SF_MAP_HINTS "sf_hints" /* ARRAY entry index -> struct sf_hint */

/* The NIC's maps (bpf/sf_nic.bpf.c; pinned by name like the switch's). */
#define SF_MAP_TCAM "sf_tcam"               /* HASH sf_tcam_key -> sf_tcam_action */
#define SF_MAP_TCAM_MASKS "sf_tcam_masks"   /* ARRAY mask index -> sf_flow_key */
#define SF_MAP_TCAM_CONFIG "sf_tcam_config" /* ARRAY[1] struct sf_tcam_config */
#define SF_MAP_TCAM_HITS "sf_tcam_hits"     /* PERCPU_ARRAY entry index -> __u64 */
#define SF_MAP_NIC_PORTS "sf_nic_ports"     /* HASH ifindex -> struct sf_nic_port */
#define SF_MAP_NIC_STATS "sf_nic_stats"     /* PERCPU_ARRAY[1] struct sf_nic_stats */
#define SF_NIC_PROG_NAME "sf_nic"

#define SF_TCAM_MAX_MASKS 32 /* distinct masks the emulated TCAM holds */

/* The TCAM's key: which mask, and the frame's key under it (only TCAM
 * fields; in_port is the switch port the NIC port feeds). */
struct sf_tcam_key {
	__u32 mask_index;
	__u32 pad;
	struct sf_flow_key key;
};

struct sf_tcam_action {
	__u32 mark;  /* written into the shim */
	__u32 index; /* the entry (counters) */
};

/* Which masks the NIC tries, in order, and how much of the matching traffic
 * it marks (mark_per_64k / 65536 of the frames, chosen at random: the
 * fraction-of-marked-traffic axis of Figure 9; 65536 marks all). */
struct sf_tcam_config {
	__u32 n_masks;
	__u32 mark_per_64k;
	__u8 order[SF_TCAM_MAX_MASKS];
};

/* A NIC port: a frame arriving on ifindex is sent on to peer_ifindex; when
 * 'mark' is set (the wire side), it is classified and marked first, as
 * entering switch port ofport. */
struct sf_nic_port {
	__u32 ofport;
	__u32 peer_ifindex;
	__u32 mark;
	__u32 pad;
};

struct sf_nic_stats {
	__u64 rx;          /* frames on NIC ports */
	__u64 marked;      /* a TCAM entry matched; shim inserted */
	__u64 not_marked;  /* a TCAM entry matched; left unmarked (mark_per_64k) */
	__u64 tcam_miss;   /* no entry matched */
	__u64 no_room;     /* no headroom for the shim: sent unmarked */
	__u64 unparsed;    /* not classified (too long, or malformed) */
	__u64 redirect_failed;
	__u64 pad;
};

/* XDP counters (per CPU; userspace sums them). */
struct sf_xdp_stats {
	__u64 rx;            /* packets seen on switch ports */
	__u64 emc_hits;
	__u64 megaflow_hits;
	__u64 misses;        /* parsed, no megaflow: resolved in userspace */
	__u64 unparsed;      /* not parsed in XDP: parsed in userspace */
	__u64 malformed;     /* parse flags set */
	__u64 not_port;      /* interface not (yet) a port: passed to the stack */
	__u64 no_socket;     /* no AF_XDP socket on the queue: passed */
	__u64 meta_failed;   /* no room for metadata: redirected without it */
	__u64 mask_searches; /* masks tried on EMC misses */
	/* NIC hints (SF_PORT_HINTS ports only; see "Offload" below) */
	__u64 hint_marked;   /* frames that arrived with a mark shim (stripped) */
	__u64 hint_hits;     /* marks verified: classification skipped */
	__u64 hint_stale;    /* the entry's generation moved on */
	__u64 hint_unknown;  /* no entry with the mark's index */
	__u64 hint_mismatch; /* the packet does not match the entry (or its
			      * megaflow is another datapath's) */
	__u64 hint_malformed;/* the frame did not parse cleanly, or the shim
			      * was cut short: the mark is not trusted */
};

SF_STATIC_ASSERT(sizeof(struct sf_port) == 16 + SF_MAX_QUEUES, "sf_port size");
SF_STATIC_ASSERT(sizeof(struct sf_megaflow_map_key) == 80, "sf_megaflow_map_key size");
SF_STATIC_ASSERT(sizeof(struct sf_megaflow_ref) == 8, "sf_megaflow_ref size");
SF_STATIC_ASSERT(sizeof(struct sf_xdp_config) == 16 + SF_MAX_MASKS, "sf_xdp_config size");
SF_STATIC_ASSERT(sizeof(struct sf_emc_entry) == 88, "sf_emc_entry size");
SF_STATIC_ASSERT(sizeof(struct sf_xdp_meta) == 104, "sf_xdp_meta size");
SF_STATIC_ASSERT(sizeof(struct sf_xdp_meta) % 4 == 0, "XDP metadata must be 4-byte sized");
SF_STATIC_ASSERT(__builtin_offsetof(struct sf_xdp_meta, magic) == sizeof(struct sf_xdp_meta) - 4,
	       "magic must be adjacent to the frame");
SF_STATIC_ASSERT(sizeof(struct sf_shim) == 8, "sf_shim size");
SF_STATIC_ASSERT(sizeof(struct sf_hint) == 160, "sf_hint size");
SF_STATIC_ASSERT(sizeof(struct sf_tcam_key) == 80, "sf_tcam_key size");
SF_STATIC_ASSERT(sizeof(struct sf_tcam_action) == 8, "sf_tcam_action size");
SF_STATIC_ASSERT(sizeof(struct sf_tcam_config) == 8 + SF_TCAM_MAX_MASKS, "sf_tcam_config size");
SF_STATIC_ASSERT(sizeof(struct sf_nic_port) == 16, "sf_nic_port size");
SF_STATIC_ASSERT(sizeof(struct sf_nic_stats) == 64, "sf_nic_stats size");
SF_STATIC_ASSERT(SF_TCAM_MAX_ENTRIES == 1u << SF_MARK_INDEX_BITS, "mark index bits");
SF_STATIC_ASSERT(sizeof(struct sf_xdp_stats) == 128, "sf_xdp_stats size");

#ifdef __cplusplus
}
#endif

#endif /* SF_ABI_H */
