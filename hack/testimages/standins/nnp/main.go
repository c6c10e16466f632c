// Command nnp stands in for /usr/local/bin/nnp of
// registry.k8s.io/e2e-test-images/nonewprivs. The image installs it setuid
// root (mode 04755), so its effective uid shows whether the runtime honoured
// no_new_privs: critest runs it as uid 1000 and expects "Effective uid: 1000"
// with NoNewPrivs and "Effective uid: 0" without.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("Effective uid: %d\n", os.Geteuid())
}
