package images

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// newResolver builds the registry resolver for one pull. The mirror
// configuration is the containerd hosts.toml layout
// (<dir>/<host>[_port_]/hosts.toml, then <dir>/_default/hosts.toml), read on
// every pull, so edits take effect without a restart and berth and a
// reference containerd can share the same directory.
func (s *Service) newResolver(ctx context.Context, auth *runtime.AuthConfig) remotes.Resolver {
	opts := config.HostOptions{
		Credentials: func(host string) (string, string, error) { return parseAuth(auth, host) },
	}
	if s.opts.RegistryConfigDir != "" {
		opts.HostDir = config.HostDirFromRoot(s.opts.RegistryConfigDir)
	}
	hosts := config.ConfigureHosts(ctx, opts)
	if tok := auth.GetRegistryToken(); tok != "" {
		hosts = withRegistryToken(hosts, auth.GetServerAddress(), tok)
	}
	return docker.NewResolver(docker.ResolverOptions{Hosts: hosts})
}

// parseAuth maps a CRI AuthConfig to the (username, secret) pair containerd's
// docker authorizer asks for when a registry answers 401. The precedence is
// containerd's: username/password, then identity token (an OAuth refresh
// token: the authorizer exchanges it when the username is empty), then the
// docker-config style base64 "user:pass". Credentials scoped to a server
// address are withheld from every other host, including mirrors, so a
// kubelet pull secret for one registry never reaches another.
func parseAuth(auth *runtime.AuthConfig, host string) (string, string, error) {
	if auth == nil || !authAppliesTo(auth.GetServerAddress(), host) {
		return "", "", nil
	}
	switch {
	case auth.GetUsername() != "":
		return auth.GetUsername(), auth.GetPassword(), nil
	case auth.GetIdentityToken() != "":
		return "", auth.GetIdentityToken(), nil
	case auth.GetAuth() != "":
		dec, err := decodeBase64(auth.GetAuth())
		if err != nil {
			return "", "", fmt.Errorf("auth.auth: invalid base64: %w", err)
		}
		user, pass, ok := strings.Cut(string(dec), ":")
		if !ok {
			return "", "", fmt.Errorf("auth.auth: decoded value is not user:password")
		}
		return user, strings.TrimRight(pass, "\x00"), nil
	}
	// Nothing usable (or only a registry token, which is not a challenge
	// response but a header; see withRegistryToken): anonymous.
	return "", "", nil
}

// decodeBase64 accepts padded and unpadded standard base64, because docker
// config files written by different tools disagree about padding.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// authAppliesTo reports whether credentials for serverAddress may be sent to
// host. An empty address applies everywhere (containerd's behaviour).
// Addresses come from docker config keys, so they may or may not have a
// scheme or a path ("https://index.docker.io/v1/", "quay.io"); the docker
// hub aliases are treated as one registry.
func authAppliesTo(serverAddress, host string) bool {
	if serverAddress == "" {
		return true
	}
	s := serverAddress
	if !strings.Contains(s, "://") {
		s = "dummy://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return false
	}
	return canonicalRegistryHost(u.Host) == canonicalRegistryHost(host)
}

func canonicalRegistryHost(h string) string {
	h = strings.ToLower(h)
	switch h {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return h
}

// withRegistryToken makes every request to a registry host that the token
// applies to carry "Authorization: Bearer <token>". A registry token is a
// ready-made bearer token, not a credential to answer a challenge with, so
// it cannot go through the authorizer's Credentials callback. It is added
// per host (and only on requests to that host) so that it never leaks to a
// token realm or to a mirror it was not issued for.
func withRegistryToken(hosts docker.RegistryHosts, serverAddress, token string) docker.RegistryHosts {
	return func(host string) ([]docker.RegistryHost, error) {
		rhs, err := hosts(host)
		if err != nil {
			return nil, err
		}
		out := make([]docker.RegistryHost, len(rhs))
		for i, rh := range rhs {
			out[i] = rh
			if !authAppliesTo(serverAddress, rh.Host) {
				continue
			}
			var c http.Client
			if rh.Client != nil {
				c = *rh.Client
			}
			base := c.Transport
			if base == nil {
				base = http.DefaultTransport
			}
			c.Transport = &bearerTransport{base: base, host: rh.Host, token: token}
			out[i].Client = &c
		}
		return out, nil
	}
}

type bearerTransport struct {
	base  http.RoundTripper
	host  string
	token string
}

func (t *bearerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.host || req.Header.Get("Authorization") != "" {
		return t.base.RoundTrip(req)
	}
	// RoundTrippers must not modify the caller's request.
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+t.token)
	return t.base.RoundTrip(r)
}
