//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * Bandwidth shaping. Measured on the kernels berth targets, a BPF policer
 * that drops over the rate collapses TCP to a few percent of the target, so
 * berth shapes with a queue instead:
 *
 *  - Where sch_fq exists, shape_edt stamps each packet with an earliest
 *    departure time from a per-pod virtual clock (rate in berth_edt, so it
 *    changes live) and fq holds it until then.
 *  - Elsewhere, shape_classify steers each packet into one of the pod's
 *    HTB flow classes by its flow hash; the classes share the pod's rate
 *    round robin and their small leaf queues bound the added latency; ARP
 *    goes to its own class (1:2) so neighbour resolution never waits
 *    behind a full queue.
 *
 * Ingress (traffic to the pod) is shaped on an ifb device in the pod's
 * namespace: shape_ingress redirects to it, and the same qdisc setup runs
 * on the ifb's egress.
 */
#include "include/berth.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define NSEC_PER_SEC 1000000000ULL

/* berth_edt: per pod and direction, the rate and the virtual clock. */
struct edt_key {
	struct addr pod;
	__u32 dir; /* 0 egress, 1 ingress */
};
struct edt_state {
	__u64 rate;    /* bytes per second; 0 = unshaped */
	__u64 t_last;  /* departure time of the previous packet, ns */
	__u64 horizon; /* drop instead of queueing further ahead than this, ns */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct edt_key);
	__type(value, struct edt_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_edt SEC(".maps");

const volatile __u8 edt_pod[16] = {};
const volatile __u32 edt_dir = 0;
const volatile __u32 ifb_ifindex = 0;
/* Class handles, as ebpf/shaping_tc.go creates them. */
#define FLOW_CLASSES 16
#define FLOW_CLASS_BASE 0x10100 /* 1:100 */
#define CONTROL_CLASS 0x10002   /* 1:2 */

SEC("tc")
int shape_classify(struct __sk_buff *skb)
{
	/* ETH_P_ARP in network order; skb->protocol is big-endian. */
	if (skb->protocol == bpf_htons(ETH_P_ARP)) {
		skb->priority = CONTROL_CLASS;
		return TC_ACT_UNSPEC;
	}
	/* The flow hash (addresses, ports, protocol) picks the flow class: an
	 * O(1) classification, where u32 filters would walk a list. */
	__u32 h = bpf_get_hash_recalc(skb);
	skb->priority = FLOW_CLASS_BASE + (h % FLOW_CLASSES);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int shape_edt(struct __sk_buff *skb)
{
	struct edt_key k = { .dir = edt_dir };
#pragma unroll
	for (int i = 0; i < 16; i++)
		k.pod.b[i] = edt_pod[i];
	struct edt_state *s = bpf_map_lookup_elem(&berth_edt, &k);
	if (!s || !s->rate)
		return TC_ACT_UNSPEC;

	__u64 now = bpf_ktime_get_ns();
	__u64 delay = (__u64)skb->wire_len * NSEC_PER_SEC / s->rate;
	__u64 t = skb->tstamp > now ? skb->tstamp : now;
	__u64 next = s->t_last + delay;
	if (next <= t) {
		/* Idle long enough: send now and restart the clock. */
		s->t_last = t;
		skb->tstamp = t;
		return TC_ACT_UNSPEC;
	}
	if (next - now > s->horizon)
		return TC_ACT_SHOT;
	s->t_last = next;
	skb->tstamp = next;
	return TC_ACT_UNSPEC;
}

SEC("tc")
int shape_ingress(struct __sk_buff *skb)
{
	if (!ifb_ifindex || skb->protocol == bpf_htons(ETH_P_ARP))
		return TC_ACT_UNSPEC;
	return bpf_redirect(ifb_ifindex, 0);
}
