/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Shared definitions of berth's tc programs: the pinned maps every program
 * and every pod share, and small packet parsers.
 *
 * Maps are pinned by name under /sys/fs/bpf/berth/ so that a plugin or agent
 * restart (and every later pod's programs) reuse the same state; see
 * ebpf/maps.go for the Go mirror of each key and value.
 */
#pragma once

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* An address in IPv4-mapped IPv6 form so one map serves both families. */
struct addr {
	__u8 b[16];
};

/* berth_endpoints: pod address -> tenant. Filled by berth-cni ADD for the
 * node's pods; removed by DEL, GC and berth-netd's stale-entry sweep. */
struct endpoint {
	__u32 tenant;
	__u32 flags;
};

/* berth_allow: allow-list prefix -> the (protocol, port) pairs reachable from
 * every tenant. port 0 means every port; proto 0 means every protocol. */
#define ALLOW_MAX_PORTS 8
struct allow_key {
	__u32 prefixlen; /* LPM: bits of addr that count */
	struct addr addr;
};
struct allow_port {
	__u8 proto;
	__u8 pad;
	__u16 port; /* host byte order */
};
struct allow_val {
	__u32 n;
	struct allow_port ports[ALLOW_MAX_PORTS];
};

/* berth_drops: per tenant and reason, packets dropped. */
enum drop_reason {
	DROP_TENANT = 1, /* cross-tenant traffic */
	DROP_SPOOF = 2,  /* source MAC/IP/ARP sender not the pod's own */
	DROP_VNI = 3,    /* VXLAN packet for a pod of another tenant's VNI */
};
struct drop_key {
	__u32 tenant;
	__u32 reason;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct addr);
	__type(value, struct endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct allow_key);
	__type(value, struct allow_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct drop_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_drops SEC(".maps");

/* berth_podnets: every pod CIDR of the cluster (value 1), and inside each
 * the node's own VTEP address, the CIDR's network address (value 0): a
 * packet whose source matches a value-1 prefix came from a pod. Anything
 * else (a node's traffic, which leaves its VXLAN device from the VTEP
 * address, e.g. after kube-proxy SNAT; external clients) is not subject
 * to the VNI guard. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__type(key, struct allow_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_podnets SEC(".maps");

/* berth_remote: the tenants of addresses that are not this node's pods,
 * kept by berth-netd in Kubernetes mode (the way Cilium's ipcache holds
 * remote identities): a full-length prefix per pod of another node, with
 * the tenant id of its namespace (0, matching no tenant, while that is not
 * known yet), and the subnet of each flat network (macvlan, ipvlan) with
 * the default tenant's id (1), so an address of that network whose pod is
 * not known yet counts as the default tenant's. Consulted after
 * berth_endpoints, which stays authoritative for the node's own pods;
 * berth-netd owns every entry here, so it can reconcile the whole map. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct allow_key);
	__type(value, struct endpoint);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_remote SEC(".maps");

static __always_inline void addr_from4(struct addr *a, __be32 ip)
{
	__builtin_memset(a, 0, sizeof(*a));
	a->b[10] = 0xff;
	a->b[11] = 0xff;
	__builtin_memcpy(&a->b[12], &ip, 4);
}

static __always_inline void addr_from6(struct addr *a, const struct in6_addr *ip)
{
	__builtin_memcpy(a->b, ip, 16);
}

static __always_inline int addr_eq(const struct addr *a, const volatile __u8 *b)
{
#pragma unroll
	for (int i = 0; i < 16; i++)
		if (a->b[i] != b[i])
			return 0;
	return 1;
}

static __always_inline void count_drop(__u32 tenant, __u32 reason)
{
	struct drop_key k = { .tenant = tenant, .reason = reason };
	__u64 *v = bpf_map_lookup_elem(&berth_drops, &k);
	if (v) {
		*v += 1;
		return;
	}
	__u64 one = 1;
	bpf_map_update_elem(&berth_drops, &k, &one, BPF_NOEXIST);
}

/* allowed_any reports whether a lies in any allow-list prefix: ARP to and
 * from an allow-listed service must work whatever its ports. */
static __always_inline int allowed_any(const struct addr *a)
{
	struct allow_key k = { .prefixlen = 128 };
	__builtin_memcpy(&k.addr, a, sizeof(k.addr));
	return bpf_map_lookup_elem(&berth_allow, &k) != 0;
}

/* allowed reports whether (a, proto, port) is on the allow-list. */
static __always_inline int allowed(const struct addr *a, __u8 proto, __u16 port)
{
	struct allow_key k = { .prefixlen = 128 };
	__builtin_memcpy(&k.addr, a, sizeof(k.addr));
	struct allow_val *v = bpf_map_lookup_elem(&berth_allow, &k);
	if (!v)
		return 0;
#pragma unroll
	for (int i = 0; i < ALLOW_MAX_PORTS; i++) {
		if (i >= v->n)
			break;
		if ((v->ports[i].proto == 0 || v->ports[i].proto == proto) &&
		    (v->ports[i].port == 0 || v->ports[i].port == port))
			return 1;
	}
	return 0;
}

/* A parsed packet: just what the policies need. */
struct pkt {
	__u16 proto;   /* ethertype, host order */
	__u8 l4;       /* IP protocol */
	__u16 sport;   /* host order, 0 if none */
	__u16 dport;
	struct addr src; /* IP source, or ARP sender */
	struct addr dst; /* IP destination, or ARP target */
	__u8 smac[6];
};

struct arp_ipv4 {
	__be16 htype, ptype;
	__u8 hlen, plen;
	__be16 op;
	__u8 sha[6];
	__be32 spa;
	__u8 tha[6];
	__be32 tpa;
} __attribute__((packed));

/* parse fills p; it returns 0 for packets the policies understand (ARP,
 * IPv4, IPv6) and -1 for everything else, which is passed unchanged. */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return -1;
	__builtin_memcpy(p->smac, eth->h_source, 6);
	p->proto = bpf_ntohs(eth->h_proto);
	p->l4 = 0;
	p->sport = p->dport = 0;

	if (p->proto == ETH_P_ARP) {
		struct arp_ipv4 *arp = (void *)(eth + 1);
		if ((void *)(arp + 1) > end)
			return -1;
		if (arp->ptype != bpf_htons(ETH_P_IP) || arp->plen != 4)
			return -1;
		addr_from4(&p->src, arp->spa);
		addr_from4(&p->dst, arp->tpa);
		return 0;
	}

	void *l4 = 0;
	if (p->proto == ETH_P_IP) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return -1;
		addr_from4(&p->src, ip->saddr);
		addr_from4(&p->dst, ip->daddr);
		p->l4 = ip->protocol;
		/* Ports only from the first fragment. */
		if (ip->frag_off & bpf_htons(0x1fff))
			return 0;
		l4 = (void *)ip + ip->ihl * 4;
	} else if (p->proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return -1;
		addr_from6(&p->src, &ip6->saddr);
		addr_from6(&p->dst, &ip6->daddr);
		p->l4 = ip6->nexthdr;
		l4 = ip6 + 1;
	} else {
		return -1;
	}
	if (p->l4 == IPPROTO_TCP || p->l4 == IPPROTO_UDP) {
		struct udphdr *u = l4; /* ports sit at the same offsets in TCP */
		if ((void *)(u + 1) <= end) {
			p->sport = bpf_ntohs(u->source);
			p->dport = bpf_ntohs(u->dest);
		}
	}
	return 0;
}
