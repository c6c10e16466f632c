// Command nginx stands in for nginx in the critest web server images
// (registry.k8s.io/e2e-test-images/nginx:1.14-2 and
// gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64), which cannot be pulled
// here. It reproduces only what critest observes:
//
//   - the master's /proc/PID/cmdline contains "master process" (ContainerPID
//     spec) and its comm is "nginx" (`pidof nginx`, HostPID spec);
//   - /var/run/nginx.pid holds its PID once it is serving;
//   - GET / answers 200 on the port of the `listen N;` line in
//     /etc/nginx/conf.d/default.conf (80 by default, 12003 for hostnet-nginx);
//   - SIGQUIT (the nginx image's stop signal), SIGTERM and SIGINT end it
//     with status 0.
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"syscall"
	"time"
)

// title is what real nginx writes over its argv. Re-executing with it as
// argv[0] gives the same cmdline. comm stays "nginx": the kernel takes comm
// from the executed file's name, not from argv.
const title = "nginx: master process nginx -g daemon off;"

const (
	confPath = "/etc/nginx/conf.d/default.conf"
	pidPath  = "/var/run/nginx.pid"
	htmlPath = "/usr/share/nginx/html/index.html"
)

func main() {
	if os.Args[0] != title {
		// Executable resolves /proc/self/exe to the real path
		// (/usr/sbin/nginx); executing /proc/self/exe would set comm "exe".
		exe, err := os.Executable()
		if err == nil {
			err = syscall.Exec(exe, []string{title}, os.Environ())
		}
		log.Fatalf("nginx: re-exec: %v", err)
	}

	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", listenPort()))
	if err != nil {
		log.Fatalf("nginx: [emerg] %v", err)
	}
	// Written only after the bind, so the file also means "serving".
	if err := os.WriteFile(pidPath, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
		log.Fatalf("nginx: [emerg] %v", err)
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		_ = os.Remove(pidPath)
		os.Exit(0)
	}()

	page, err := os.ReadFile(htmlPath)
	if err != nil {
		page = []byte("<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n" +
			"<body><h1>Welcome to nginx!</h1></body></html>\n")
	}
	log.Fatal(http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "nginx/1.14.2")
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write(page)
		// Access log on stdout, as the nginx image links access.log there.
		fmt.Printf("%s - - [%s] \"%s %s %s\" 200 %d \"-\" %q\n", r.RemoteAddr,
			time.Now().Format("02/Jan/2006:15:04:05 -0700"), r.Method, r.URL.RequestURI(),
			r.Proto, len(page), r.UserAgent())
	})))
}

// listenPort returns the port of the first `listen [ADDR:]PORT` directive
// in the site config, or 80.
func listenPort() int {
	b, err := os.ReadFile(confPath)
	if err != nil {
		return 80
	}
	m := regexp.MustCompile(`(?m)^\s*listen\s+(?:\S*:)?(\d+)`).FindSubmatch(b)
	if m == nil {
		return 80
	}
	var port int
	fmt.Sscan(string(m[1]), &port)
	return port
}
