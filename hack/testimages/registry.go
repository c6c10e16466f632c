package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// registry pushes to a distribution registry over plain HTTP with the
// registry API (no auth: it only listens on loopback).
type registry struct {
	base   string // http://HOST:PORT
	client *http.Client
}

func newRegistry(addr string) *registry {
	return &registry{base: "http://" + addr, client: &http.Client{Timeout: 2 * time.Minute}}
}

// do sends one request and fails unless the status is one of want.
func (r *registry) do(req *http.Request, want ...int) (*http.Response, error) {
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, err
	}
	for _, w := range want {
		if resp.StatusCode == w {
			return resp, nil
		}
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	return nil, fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Redacted(), resp.Status, strings.TrimSpace(string(body)))
}

// ping checks that the registry answers the v2 API.
func (r *registry) ping() error {
	req, _ := http.NewRequest(http.MethodGet, r.base+"/v2/", nil)
	resp, err := r.do(req, http.StatusOK)
	if err == nil {
		resp.Body.Close()
	}
	return err
}

// manifestDigest returns the digest the registry holds for repo:tag, or ""
// when it has none.
func (r *registry) manifestDigest(repo, tag string) (string, error) {
	req, _ := http.NewRequest(http.MethodHead, r.base+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", mediaManifest)
	resp, err := r.do(req, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return "", nil
	}
	return resp.Header.Get("Docker-Content-Digest"), nil
}

// hasBlob reports whether repo already links the blob.
func (r *registry) hasBlob(repo, digest string) (bool, error) {
	req, _ := http.NewRequest(http.MethodHead, r.base+"/v2/"+repo+"/blobs/"+digest, nil)
	resp, err := r.do(req, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// pushBlob uploads b into repo unless it is already there: a monolithic
// upload, POST to open the session then PUT the bytes with ?digest=.
func (r *registry) pushBlob(repo string, b blob) error {
	if ok, err := r.hasBlob(repo, b.digest); err != nil || ok {
		return err
	}
	req, _ := http.NewRequest(http.MethodPost, r.base+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := r.do(req, http.StatusAccepted)
	if err != nil {
		return err
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return fmt.Errorf("upload location: %w", err)
	}
	base, _ := url.Parse(r.base)
	loc = base.ResolveReference(loc) // Location may be relative
	q := loc.Query()
	q.Set("digest", b.digest)
	loc.RawQuery = q.Encode()
	req, _ = http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(b.data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = r.do(req, http.StatusCreated)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// putManifest stores the manifest under repo:tag.
func (r *registry) putManifest(repo, tag string, m blob) error {
	req, _ := http.NewRequest(http.MethodPut, r.base+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(m.data))
	req.Header.Set("Content-Type", mediaManifest)
	resp, err := r.do(req, http.StatusCreated)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != m.digest {
		return fmt.Errorf("registry stored %s:%s as %s, expected %s", repo, tag, got, m.digest)
	}
	return nil
}
