package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// HTB layout on a shaped device:
//
//	1:        htb, default 1:100
//	1:1       the pod's rate and burst (inner class)
//	1:100+i   FlowClasses flow classes under 1:1, rate R/FlowClasses, ceil R:
//	          shape_classify puts each packet in the class of its flow
//	          hash, and HTB serves the classes that have packets round
//	          robin. A sparse flow (a DNS query, a ping, an ACK stream) so
//	          never waits behind a bulk flow's queue nor is dropped because
//	          the bulk flows filled it: this kernel has neither fq, fq_codel
//	          nor sfq to do it. Leaf: a FIFO of QueueBytes(R).
//	1:2       ARP, 1% of the rate (at least 64 kbit), so neighbour
//	          resolution never queues behind data; leaf: default pfifo
var (
	htbRoot    = netlink.MakeHandle(1, 0)
	htbShaped  = netlink.MakeHandle(1, 1)
	htbControl = netlink.MakeHandle(1, 2)
)

// FlowClasses is how many flow classes share a pod's rate. With 16, four
// bulk flows leave a new flow a 75% chance of a class of its own.
const FlowClasses = 16

// flowClass is the handle of flow class i; flowLeaf its leaf qdisc's.
func flowClass(i int) uint32 { return netlink.MakeHandle(1, uint16(0x100+i)) }
func flowLeaf(i int) uint32  { return netlink.MakeHandle(uint16(0x100+i), 0) }

// setHTB shapes l's egress. segment is for ingress shaping on the ifb:
// there the packets are whatever the sender built, up to 64 KiB GSO
// super-packets that a byte-limited FIFO sized for a few milliseconds at a
// low rate would drop whole (TCP then collapses). A TBF leaf running at
// twice the class rate never limits, but it splits any packet longer than
// its two-frame bucket into frames on enqueue, so the small queue holds
// frames and latency stays bounded.
func setHTB(l netlink.Link, bitsPerSec, burstBits uint64, segment bool) error {
	idx := l.Attrs().Index
	root := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: idx, Handle: htbRoot, Parent: netlink.HANDLE_ROOT})
	root.Defcls = 0x100
	// Replace keeps an existing HTB (and its classes) in place, so a rate
	// change does not flush queued packets.
	if err := netlink.QdiscReplace(root); err != nil {
		return fmt.Errorf("htb root: %w", err)
	}
	burst := uint32(min(burstBits/8, 1<<31))
	shaped := netlink.NewHtbClass(netlink.ClassAttrs{LinkIndex: idx, Parent: htbRoot, Handle: htbShaped},
		netlink.HtbClassAttrs{Rate: bitsPerSec, Ceil: bitsPerSec, Buffer: burst, Cbuffer: burst})
	if err := netlink.ClassReplace(shaped); err != nil {
		return fmt.Errorf("htb class 1:1: %w", err)
	}
	ctl := max(bitsPerSec/100, 64_000)
	control := netlink.NewHtbClass(netlink.ClassAttrs{LinkIndex: idx, Parent: htbRoot, Handle: htbControl},
		netlink.HtbClassAttrs{Rate: ctl, Ceil: ctl})
	if err := netlink.ClassReplace(control); err != nil {
		return fmt.Errorf("htb class 1:2: %w", err)
	}
	share := max(bitsPerSec/FlowClasses, 8_000)
	for i := 0; i < FlowClasses; i++ {
		// Flow classes borrow the parent's tokens up to its rate; their own
		// small bucket and a one-frame quantum make the round robin fine
		// grained. The parent's burst is the pod's burst.
		fc := netlink.NewHtbClass(netlink.ClassAttrs{LinkIndex: idx, Parent: htbShaped, Handle: flowClass(i)},
			netlink.HtbClassAttrs{Rate: share, Ceil: bitsPerSec, Buffer: 2 * 1514, Cbuffer: burst, Quantum: 1514})
		if err := netlink.ClassReplace(fc); err != nil {
			return fmt.Errorf("htb flow class %d: %w", i, err)
		}
		if err := setLeaf(idx, flowClass(i), flowLeaf(i), bitsPerSec, segment); err != nil {
			return err
		}
	}
	return nil
}

func setLeaf(idx int, parent, handle uint32, bitsPerSec uint64, segment bool) error {
	if segment {
		rate := bitsPerSec / 8 * 2
		tbf := &netlink.Tbf{
			QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: handle, Parent: parent},
			Rate:       rate,
			Limit:      QueueBytes(bitsPerSec),
			Buffer:     netlink.Xmittime(rate, 2*1514),
		}
		if err := netlink.QdiscReplace(tbf); err != nil {
			return fmt.Errorf("tbf leaf: %w", err)
		}
		return nil
	}
	return replaceBfifo(idx, parent, handle, QueueBytes(bitsPerSec))
}

// replaceBfifo installs a byte-limited FIFO. vishvananda/netlink has no
// typed bfifo, so the request is built here: TCA_OPTIONS is struct
// tc_fifo_qopt { __u32 limit; }.
func replaceBfifo(ifindex int, parent, handle uint32, limit uint32) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWQDISC, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK)
	req.AddData(&nl.TcMsg{Family: nl.FAMILY_ALL, Ifindex: int32(ifindex), Handle: handle, Parent: parent})
	req.AddData(nl.NewRtAttr(nl.TCA_KIND, nl.ZeroTerminated("bfifo")))
	opt := make([]byte, 4)
	binary.NativeEndian.PutUint32(opt, limit)
	req.AddData(nl.NewRtAttr(nl.TCA_OPTIONS, opt))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("bfifo leaf (limit %d bytes): %w", limit, err)
	}
	return nil
}

func setFQ(l netlink.Link) error {
	fq := &netlink.Fq{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT}}
	if err := netlink.QdiscReplace(fq); err != nil {
		return fmt.Errorf("fq root: %w", err)
	}
	return nil
}

func deleteRootQdisc(l netlink.Link) error {
	qs, err := netlink.QdiscList(l)
	if err != nil {
		return err
	}
	for _, q := range qs {
		if q.Attrs().Parent == netlink.HANDLE_ROOT && (q.Type() == "htb" || q.Type() == "fq") {
			if err := netlink.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) {
				return err
			}
		}
	}
	return nil
}

// ensureIFB creates (or finds) the ingress-shaping ifb and brings it up.
func ensureIFB(name string, mtu int) (netlink.Link, error) {
	if l, err := netlink.LinkByName(name); err == nil {
		if _, ok := l.(*netlink.Ifb); !ok {
			return nil, fmt.Errorf("%s exists and is a %s, not an ifb", name, l.Type())
		}
		return l, netlink.LinkSetUp(l)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.MTU = mtu
	if err := netlink.LinkAdd(&netlink.Ifb{LinkAttrs: attrs}); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("create ifb %s: %w", name, err)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, err
	}
	return l, netlink.LinkSetUp(l)
}

// haveQdisc probes whether the kernel can create a qdisc of kind, on the
// loopback of a throwaway namespace.
func haveQdisc(kind string) bool {
	tmp, err := ns.TempNetNS()
	if err != nil {
		return false
	}
	defer tmp.Close()
	ok := false
	_ = tmp.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: lo.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT}, QdiscType: kind}
		ok = netlink.QdiscAdd(q) == nil
		return nil
	})
	return ok
}
