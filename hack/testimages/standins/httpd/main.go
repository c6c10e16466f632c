// Command httpd stands in for Apache httpd in
// registry.k8s.io/e2e-test-images/httpd:2.4.39-4, which cannot be pulled
// here. critest's "Multiple Containers" specs only need GET / to answer 200
// on port 80 and the container log to contain "httpd", which the real
// server's start-up notice (AH00094, printed on stderr) provides.
// SIGWINCH (the image's stop signal), SIGTERM and SIGINT end it with status 0.
package main

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const page = "<html><body><h1>It works!</h1></body></html>\n"

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGWINCH, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		os.Exit(0)
	}()

	srv := &http.Server{Addr: ":80", Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Server", "Apache/2.4.39 (Unix)")
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(page))
	})}
	now := time.Now().Format("Mon Jan 02 15:04:05.000000 2006")
	pid := os.Getpid()
	fmt.Fprintf(os.Stderr, "[%s] [mpm_event:notice] [pid %d:tid %d] AH00489: Apache/2.4.39 (Unix) configured -- resuming normal operations\n", now, pid, pid)
	fmt.Fprintf(os.Stderr, "[%s] [core:notice] [pid %d:tid %d] AH00094: Command line: 'httpd -D FOREGROUND'\n", now, pid, pid)
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintf(os.Stderr, "httpd: %v\n", err)
		os.Exit(1)
	}
}
