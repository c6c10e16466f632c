package ebpf

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/ebpf/attach"
)

// Path is the shaping mechanism chosen for this kernel.
type Path string

const (
	// PathEDT: BPF earliest-departure-time stamps honoured by sch_fq.
	PathEDT Path = "edt-fq"
	// PathHTB: BPF classification into a per-pod HTB class with a small
	// byte-limited leaf queue.
	PathHTB Path = "htb"
)

// Rate is one direction's limit.
type Rate struct {
	BitsPerSec uint64 // 0 = unshaped
	BurstBits  uint64 // 0 = DefaultBurst
}

// Shaping is a pod's limits. Egress is traffic the pod sends.
type Shaping struct {
	Egress, Ingress Rate
}

// QueueDelay bounds how long a packet may wait in a pod's shaping queue;
// the queue is sized to hold this much traffic at the shaped rate. TCP then
// sees loss instead of ever-growing delay, which is what keeps latency
// under load low (the reference plugin's TBF uses 25 ms).
const QueueDelay = 5 * time.Millisecond

// minQueueBytes keeps a queue useful at very low rates: ten full frames.
const minQueueBytes = 10 * 1514

// maxSkb is the largest packet a GSO/GRO path hands a qdisc.
const maxSkb = 64 << 10

// DefaultBurst is the burst used when a pod's annotation gives none (or 0,
// which kubelet users hit often): 4 ms at the rate, and never less than
// eight full frames. Measured, a floor of two 64 KiB packets let a 10 Mbit/s
// pod send at twice its rate for the first 100 ms; the packets a shaped pod
// hands its shaper are bounded by GSOFor (egress) or split into frames
// (ingress), so a frame-sized floor does not stall the class.
func DefaultBurst(bitsPerSec uint64) uint64 {
	b := bitsPerSec * 4 / 1000
	if min := uint64(8 * 1514 * 8); b < min {
		b = min
	}
	return b
}

// QueueBytes is the leaf queue size for rate.
func QueueBytes(bitsPerSec uint64) uint32 {
	q := bitsPerSec / 8 * uint64(QueueDelay) / uint64(time.Second)
	if q < minQueueBytes {
		q = minQueueBytes
	}
	if q > 1<<30 {
		q = 1 << 30
	}
	return uint32(q)
}

// GSOFor is the pod interface's GSO limit at rate: about 1 ms of traffic,
// so one super-packet never occupies the shaper for longer than that, and
// between two full frames and the 64 KiB default.
func GSOFor(bitsPerSec uint64) int {
	g := bitsPerSec / 8 / 1000
	if g < 2*1514 {
		g = 2 * 1514
	}
	if g > maxSkb {
		g = maxSkb
	}
	return int(g)
}

var shapeEgressHTB = []placement{{"shape_classify", attach.Egress, attach.Last}}
var shapeEgressEDT = []placement{{"shape_edt", attach.Egress, attach.Last}}
var shapeIngress = []placement{{"shape_ingress", attach.Ingress, attach.Last}}

// IFBName is the ingress-shaping device of pod interface ifName, created in
// the pod's namespace next to it.
func IFBName(ifName string) string {
	n := "bifb-" + ifName
	if len(n) > 15 {
		n = n[:15]
	}
	return n
}

// DetectPath picks EDT when the kernel has sch_fq, else HTB. It probes by
// creating an fq qdisc in a throwaway namespace (see probe.go).
func DetectPath() Path {
	if haveQdisc("fq") {
		return PathEDT
	}
	return PathHTB
}

// ApplyShaping shapes pod interface ifName (call inside the pod's
// namespace). pod is the pod's address, used to key EDT state. It is
// idempotent: applying again with other rates updates in place.
func (m *Maps) ApplyShaping(ifName string, pod netip.Addr, s Shaping, path Path) error {
	l, err := netlink.LinkByName(ifName)
	if err != nil {
		return err
	}
	if s.Egress.BitsPerSec > 0 {
		if err := m.shapeDir(l, pod, 0, s.Egress, path, shapeEgress(path)); err != nil {
			return fmt.Errorf("egress shaping on %s: %w", ifName, err)
		}
		// Smaller GSO packets at low rates: latency under load is bounded
		// by the largest packet the shaper must hold.
		if err := netlink.LinkSetGSOMaxSize(l, GSOFor(s.Egress.BitsPerSec)); err != nil {
			return fmt.Errorf("gso_max_size on %s: %w", ifName, err)
		}
	} else if err := m.unshapeDir(l, pod, 0, shapeEgress(path)); err != nil {
		return err
	}
	if s.Ingress.BitsPerSec > 0 {
		ifb, err := ensureIFB(IFBName(ifName), l.Attrs().MTU)
		if err != nil {
			return fmt.Errorf("ingress shaping device: %w", err)
		}
		if err := m.shapeDir(ifb, pod, 1, s.Ingress, path, shapeEgress(path)); err != nil {
			return fmt.Errorf("ingress shaping on %s: %w", ifb.Attrs().Name, err)
		}
		spec, err := loadShape()
		if err != nil {
			return err
		}
		if _, err := m.loadAndAttach("ingress redirect", spec, map[string]any{"ifb_ifindex": uint32(ifb.Attrs().Index)}, l.Attrs().Index, shapeIngress); err != nil {
			return err
		}
	} else {
		if err := detachAll(l.Attrs().Index, shapeIngress); err != nil {
			return err
		}
		if err := deleteLink(IFBName(ifName)); err != nil {
			return err
		}
		if err := m.EDT.Delete(edtKey(pod, 1)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}

func shapeEgress(p Path) []placement {
	if p == PathEDT {
		return shapeEgressEDT
	}
	return shapeEgressHTB
}

func edtKey(pod netip.Addr, dir uint32) shapeEdtKey {
	return shapeEdtKey{Pod: shapeAddr{B: AddrKey(pod).B}, Dir: dir}
}

// shapeDir installs the queue and the program on l's egress.
func (m *Maps) shapeDir(l netlink.Link, pod netip.Addr, dir uint32, r Rate, path Path, places []placement) error {
	burst := r.BurstBits
	if burst == 0 {
		burst = DefaultBurst(r.BitsPerSec)
	}
	spec, err := loadShape()
	if err != nil {
		return err
	}
	consts := map[string]any{}
	if path == PathEDT {
		st := shapeEdtState{Rate: r.BitsPerSec / 8, Horizon: uint64(2 * QueueDelay)}
		if err := m.EDT.Update(edtKey(pod, dir), st, ebpf.UpdateAny); err != nil {
			return err
		}
		if err := setFQ(l); err != nil {
			return err
		}
		consts["edt_pod"] = AddrKey(pod).B
		consts["edt_dir"] = dir
	} else if err := setHTB(l, r.BitsPerSec, burst, dir == 1); err != nil {
		return err
	}
	_, err = m.loadAndAttach("shaping", spec, consts, l.Attrs().Index, places)
	return err
}

// unshapeDir removes the egress queue and program from l.
func (m *Maps) unshapeDir(l netlink.Link, pod netip.Addr, dir uint32, places []placement) error {
	if err := detachAll(l.Attrs().Index, places); err != nil {
		return err
	}
	if err := m.EDT.Delete(edtKey(pod, dir)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return deleteRootQdisc(l)
}

// RemoveShaping undoes ApplyShaping (inside the pod's namespace); a pod
// whose namespace is already gone needs only ForgetShaping.
func (m *Maps) RemoveShaping(ifName string, pod netip.Addr) error {
	l, err := netlink.LinkByName(ifName)
	if err == nil {
		var errs []error
		errs = append(errs, m.unshapeDir(l, pod, 0, shapeEgressHTB), detachAll(l.Attrs().Index, shapeEgressEDT),
			detachAll(l.Attrs().Index, shapeIngress))
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	if err := deleteLink(IFBName(ifName)); err != nil {
		return err
	}
	return m.ForgetShaping(pod)
}

// ForgetShaping drops the pod's EDT state.
func (m *Maps) ForgetShaping(pod netip.Addr) error {
	for _, d := range []uint32{0, 1} {
		if err := m.EDT.Delete(edtKey(pod, d)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}

// CheckShaping verifies that ifName carries the shaping s asks for.
func CheckShaping(ifName string, s Shaping, path Path) error {
	l, err := netlink.LinkByName(ifName)
	if err != nil {
		return err
	}
	if s.Egress.BitsPerSec > 0 {
		if err := checkDir(l, s.Egress, path, shapeEgress(path)); err != nil {
			return fmt.Errorf("egress: %w", err)
		}
	}
	if s.Ingress.BitsPerSec > 0 {
		ifb, err := netlink.LinkByName(IFBName(ifName))
		if err != nil {
			return fmt.Errorf("ingress: device %s missing: %w", IFBName(ifName), err)
		}
		if err := checkDir(ifb, s.Ingress, path, shapeEgress(path)); err != nil {
			return fmt.Errorf("ingress: %w", err)
		}
		if ok, err := attachedAll(l.Attrs().Index, shapeIngress); err != nil || !ok {
			return fmt.Errorf("ingress: redirect program not attached to %s (%v)", ifName, err)
		}
	}
	return nil
}

func checkDir(l netlink.Link, r Rate, path Path, places []placement) error {
	if ok, err := attachedAll(l.Attrs().Index, places); err != nil || !ok {
		return fmt.Errorf("program not attached to %s (%v)", l.Attrs().Name, err)
	}
	if path == PathEDT {
		return nil
	}
	classes, err := netlink.ClassList(l, netlink.MakeHandle(1, 0))
	if err != nil {
		return err
	}
	found, flows := false, 0
	for _, c := range classes {
		h, ok := c.(*netlink.HtbClass)
		if !ok {
			continue
		}
		switch {
		case c.Attrs().Handle == htbShaped:
			if h.Rate != r.BitsPerSec/8 {
				return fmt.Errorf("%s class 1:1 rate %d B/s, want %d", l.Attrs().Name, h.Rate, r.BitsPerSec/8)
			}
			found = true
		case c.Attrs().Parent == htbShaped:
			flows++
		}
	}
	if !found {
		return fmt.Errorf("%s has no HTB class 1:1", l.Attrs().Name)
	}
	if flows != FlowClasses {
		return fmt.Errorf("%s has %d flow classes under 1:1, want %d", l.Attrs().Name, flows, FlowClasses)
	}
	return nil
}

func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}
