package ebpf

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/berthdev/berth/ebpf/attach"
)

// placement says where one program of a concern goes.
type placement struct {
	prog string
	dir  attach.Direction
	pos  attach.Position
}

// loadAndAttach loads progs from spec with its per-interface constants set
// and the shared maps in place, and attaches each to ifindex in the current
// network namespace. The returned file descriptors are closed: an attached
// program is held by its hook, not by this process.
func (m *Maps) loadAndAttach(what string, spec *ebpf.CollectionSpec, consts map[string]any, ifindex int, places []placement) (attach.Mode, error) {
	for name, v := range consts {
		vs, ok := spec.Variables[name]
		if !ok {
			return "", fmt.Errorf("load %s: no constant %q in the object", what, name)
		}
		if err := vs.Set(v); err != nil {
			return "", fmt.Errorf("load %s: set %s: %w", what, name, err)
		}
	}
	// Only the programs this concern attaches here are loaded; the others
	// in the object are dropped so the verifier does not run on them.
	keep := map[string]bool{}
	for _, p := range places {
		keep[p.prog] = true
	}
	for name := range spec.Programs {
		if !keep[name] {
			delete(spec.Programs, name)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: m.Replacements(spec)})
	if err != nil {
		return "", explain(what, err)
	}
	defer coll.Close()
	var mode attach.Mode
	for _, p := range places {
		prog := coll.Programs[p.prog]
		if prog == nil {
			return "", fmt.Errorf("load %s: program %s missing from the object", what, p.prog)
		}
		mode, err = attach.Attach(attach.Hook{Ifindex: ifindex, Dir: p.dir}, prog, p.pos)
		if err != nil {
			return "", err
		}
	}
	return mode, nil
}

// detachAll removes the programs of places from ifindex.
func detachAll(ifindex int, places []placement) error {
	var first error
	for _, p := range places {
		if err := attach.Detach(attach.Hook{Ifindex: ifindex, Dir: p.dir}, p.prog); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// attachedAll reports whether every program of places sits on ifindex.
func attachedAll(ifindex int, places []placement) (bool, error) {
	for _, p := range places {
		_, ok, err := attach.Attached(attach.Hook{Ifindex: ifindex, Dir: p.dir}, p.prog)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}
