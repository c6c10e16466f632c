//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * Tenant isolation. Attached to each pod's interface inside the pod's
 * network namespace (where a pod without CAP_NET_ADMIN cannot remove it), on
 * both directions, and to each tenant VXLAN device's ingress.
 *
 * A packet is dropped when its other end is a pod of a different tenant,
 * unless that end is on the allow-list (for example cluster DNS). On egress
 * the pod's source MAC, IP and ARP sender must be its own, so a pod cannot
 * borrow another tenant's identity or poison neighbours' ARP caches.
 *
 * Programs return TC_ACT_UNSPEC to hand the packet to the next program
 * (shaping), which both TCX and cls_bpf treat as "continue".
 */
#include "include/berth.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Per-pod constants, rewritten by the loader before the program is loaded. */
const volatile __u32 pod_tenant = 0;
const volatile __u8 pod_ip4[16] = {};	/* IPv4-mapped; all zero if none */
const volatile __u8 pod_ip6[16] = {};	/* all zero if none */
const volatile __u8 pod_mac[6] = {};
const volatile __u8 check_mac = 0;	/* macvlan/veth: the MAC is the pod's */

static __always_inline int is_zero(const volatile __u8 *b)
{
#pragma unroll
	for (int i = 0; i < 16; i++)
		if (b[i])
			return 0;
	return 1;
}

/* own reports whether a is one of the pod's addresses. IPv6 link-local and
 * unspecified sources are the pod's own too: neighbour discovery and DAD
 * use them before any global address exists. */
static __always_inline int own(const struct addr *a, __u16 proto)
{
	if (proto == ETH_P_IPV6) {
		if (a->b[0] == 0xfe && (a->b[1] & 0xc0) == 0x80)
			return 1;
		int unspec = 1;
#pragma unroll
		for (int i = 0; i < 16; i++)
			if (a->b[i])
				unspec = 0;
		if (unspec)
			return 1;
		return !is_zero(pod_ip6) && addr_eq(a, pod_ip6);
	}
	return !is_zero(pod_ip4) && addr_eq(a, pod_ip4);
}

/* foreign reports whether a belongs to a pod of another tenant: one of
 * this node's pods (berth_endpoints), else one berth-netd knows on another
 * node, or an unknown address of a flat pod network, which counts as the
 * default tenant's (berth_remote, longest prefix). An address in neither is
 * not a pod berth knows of (a node, a service, the outside) and passes. */
static __always_inline int foreign(const struct addr *a)
{
	struct endpoint *ep = bpf_map_lookup_elem(&berth_endpoints, a);
	if (ep)
		return ep->tenant != pod_tenant;
	struct allow_key k = { .prefixlen = 128 };
	__builtin_memcpy(&k.addr, a, sizeof(k.addr));
	ep = bpf_map_lookup_elem(&berth_remote, &k);
	return ep && ep->tenant != pod_tenant;
}

static __always_inline int drop(__u32 reason)
{
	count_drop(pod_tenant, reason);
	return TC_ACT_SHOT;
}

/* permitted reports whether the packet is to or from an allow-listed
 * service: requests to its (protocol, port), its replies from that port,
 * and ARP for its address. The check is stateless, so a service may also
 * originate from its listed port; the allow-list is for shared
 * infrastructure (cluster DNS), which is trusted that far. */
static __always_inline int permitted(const struct pkt *p)
{
	if (p->proto == ETH_P_ARP)
		return allowed_any(&p->dst) || allowed_any(&p->src);
	return allowed(&p->dst, p->l4, p->dport) || allowed(&p->src, p->l4, p->sport);
}

SEC("tc")
int tenant_pod_egress(struct __sk_buff *skb)
{
	struct pkt p;
	if (parse(skb, &p) < 0)
		return TC_ACT_UNSPEC;
	if (check_mac) {
#pragma unroll
		for (int i = 0; i < 6; i++)
			if (p.smac[i] != pod_mac[i])
				return drop(DROP_SPOOF);
	}
	if (!own(&p.src, p.proto))
		return drop(DROP_SPOOF);
	if (permitted(&p))
		return TC_ACT_UNSPEC;
	if (foreign(&p.dst))
		return drop(DROP_TENANT);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int tenant_pod_ingress(struct __sk_buff *skb)
{
	struct pkt p;
	if (parse(skb, &p) < 0)
		return TC_ACT_UNSPEC;
	if (permitted(&p))
		return TC_ACT_UNSPEC;
	if (foreign(&p.src))
		return drop(DROP_TENANT);
	return TC_ACT_UNSPEC;
}

/* Per-VXLAN-device constant: the tenant that owns the VNI. */
const volatile __u32 vni_tenant = 0;

/* tenant_vni_ingress runs on a tenant's VXLAN device after decapsulation:
 * the inner destination must be a pod of the VNI's tenant (or allowed). The
 * wire already keeps tenants apart; this stops a forged VNI at the node. */
SEC("tc")
int tenant_vni_ingress(struct __sk_buff *skb)
{
	struct pkt p;
	if (parse(skb, &p) < 0)
		return TC_ACT_UNSPEC;
	if (permitted(&p))
		return TC_ACT_UNSPEC;
	struct endpoint *ep = bpf_map_lookup_elem(&berth_endpoints, &p.dst);
	if (!ep || ep->tenant == vni_tenant)
		return TC_ACT_UNSPEC;
	/* Only pod-sourced packets are bound to their tenant's VNI; the
	 * default tenant's VNI also carries node traffic (SNATed services). */
	struct allow_key k = { .prefixlen = 128 };
	__builtin_memcpy(&k.addr, &p.src, sizeof(k.addr));
	__u32 *is_pod = bpf_map_lookup_elem(&berth_podnets, &k);
	if (is_pod && *is_pod) {
		count_drop(vni_tenant, DROP_VNI);
		return TC_ACT_SHOT;
	}
	return TC_ACT_UNSPEC;
}
