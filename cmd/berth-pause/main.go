// Command berth-pause is the first process (PID 1) of every berth pod
// sandbox, the counterpart of Kubernetes' pause container.
//
// It holds the pod's namespaces open while app containers come and go, so
// it must do almost nothing and never exit on its own. Being PID 1 of the
// pod's PID namespace (when the pod shares one) gives it two extra duties:
//
//   - Orphans are reparented to it, so it reaps them. Otherwise every
//     exited orphan stays a zombie and holds a PID until the pod dies.
//   - The kernel drops signals PID 1 has no handler for, so SIGINT and
//     SIGTERM need explicit handlers to stop the sandbox cleanly (exit 0);
//     without them the runtime would have to wait for its SIGKILL timeout.
//
// It is built with CGO_ENABLED=0, so the binary is static and runs in an
// image that holds nothing else.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is printed by -v, as upstream pause does; kubelet and tools only
// ever look at the image tag.
const version = "berth-pause 1.0"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println(version)
		return
	}
	// Handlers first: until Notify, SIGTERM still kills the process (not
	// as PID 1, where the kernel drops it) instead of exiting 0. One
	// buffered slot is enough: signals of one kind coalesce in the kernel
	// anyway, and reap drains every exited child per wake-up.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	reap() // anything that exited before the handler was in place
	if os.Getpid() != 1 {
		// Not fatal (tests, debugging), but orphans then go elsewhere.
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}
	for sig := range sigs {
		switch sig {
		case syscall.SIGCHLD:
			reap()
		default:
			fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", sig)
			os.Exit(0)
		}
	}
}

// reap collects every child that has exited, without blocking. SIGCHLDs
// coalesce, so one signal may stand for many exits: loop until wait4 says
// no child is ready (0) or none is left (ECHILD).
func reap() (n int) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return n
		}
		n++
	}
}
