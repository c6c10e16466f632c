// Package fdstore keeps file descriptors for another process. berth-csi's
// node plugin parks each volume's /dev/fuse descriptor here; when the
// plugin restarts (a crash, kill -9, an upgrade), the kernel still sees an
// open connection, so mounted volumes stall instead of failing with
// "transport endpoint is not connected", and the new plugin takes the
// descriptors back and resumes serving.
//
// The protocol is one JSON message per SOCK_SEQPACKET datagram, with the
// descriptor, if any, as SCM_RIGHTS ancillary data.
package fdstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Entry is one kept descriptor with its owner's metadata.
type Entry struct {
	Key  string          `json:"key"`
	Meta json.RawMessage `json:"meta,omitempty"`
	Fd   int             `json:"-"`
}

type message struct {
	Op    string          `json:"op"` // put, del, list; replies: ok, entry, end, error
	Key   string          `json:"key,omitempty"`
	Meta  json.RawMessage `json:"meta,omitempty"`
	Error string          `json:"error,omitempty"`
}

const maxMessage = 64 << 10

// Server holds descriptors in memory. It persists nothing: if the holder
// itself dies, the kernel connections end with it, and there is nothing
// left to restore.
type Server struct {
	log *slog.Logger
	mu  sync.Mutex
	fds map[string]*Entry
}

// NewServer returns an empty store.
func NewServer(log *slog.Logger) *Server {
	return &Server{log: log, fds: map[string]*Entry{}}
}

// Len is the number of descriptors held.
func (s *Server) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.fds)
}

// Listen opens the socket, replacing a stale one, mode 0600.
func Listen(path string) (*net.UnixListener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	return l, os.Chmod(path, 0o600)
}

// Serve answers clients until l is closed.
func (s *Server) Serve(l *net.UnixListener) error {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return err
		}
		go s.conn(c)
	}
}

func (s *Server) conn(c *net.UnixConn) {
	defer c.Close()
	for {
		m, fd, err := recv(c)
		if err != nil {
			return
		}
		var reply message
		switch m.Op {
		case "put":
			if fd < 0 || m.Key == "" {
				reply = message{Op: "error", Error: "put needs a key and a descriptor"}
				if fd >= 0 {
					unix.Close(fd)
				}
				break
			}
			s.mu.Lock()
			if old := s.fds[m.Key]; old != nil {
				unix.Close(old.Fd)
			}
			s.fds[m.Key] = &Entry{Key: m.Key, Meta: m.Meta, Fd: fd}
			s.mu.Unlock()
			s.log.Info("holding descriptor", "key", m.Key)
			reply = message{Op: "ok"}
		case "del":
			s.mu.Lock()
			if old := s.fds[m.Key]; old != nil {
				unix.Close(old.Fd)
				delete(s.fds, m.Key)
				s.log.Info("released descriptor", "key", m.Key)
			}
			s.mu.Unlock()
			reply = message{Op: "ok"}
		case "list":
			if err := s.list(c, m.Key); err != nil {
				return
			}
			continue
		case "keys":
			s.mu.Lock()
			keys := make([]string, 0, len(s.fds))
			for k := range s.fds {
				keys = append(keys, k)
			}
			s.mu.Unlock()
			sort.Strings(keys)
			b, _ := json.Marshal(keys)
			reply = message{Op: "ok", Meta: b}
		default:
			reply = message{Op: "error", Error: fmt.Sprintf("unknown op %q", m.Op)}
		}
		if err := send(c, reply, -1); err != nil {
			return
		}
	}
}

func (s *Server) list(c *net.UnixConn, prefix string) error {
	s.mu.Lock()
	entries := make([]Entry, 0, len(s.fds))
	for _, e := range s.fds {
		if strings.HasPrefix(e.Key, prefix) {
			// Dup under the lock, so a concurrent del cannot close the
			// number before it is sent.
			d, err := unix.FcntlInt(uintptr(e.Fd), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				continue
			}
			entries = append(entries, Entry{Key: e.Key, Meta: e.Meta, Fd: d})
		}
	}
	s.mu.Unlock()
	sort.Slice(entries, func(i, j int) bool { return entries[i].Key < entries[j].Key })
	var err error
	for _, e := range entries {
		if err == nil {
			err = send(c, message{Op: "entry", Key: e.Key, Meta: e.Meta}, e.Fd)
		}
		unix.Close(e.Fd)
	}
	if err != nil {
		return err
	}
	return send(c, message{Op: "end"}, -1)
}

func send(c *net.UnixConn, m message, fd int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	_, _, err = c.WriteMsgUnix(b, oob, nil)
	return err
}

func recv(c *net.UnixConn) (message, int, error) {
	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return message{}, -1, err
	}
	if n == 0 {
		return message{}, -1, errors.New("connection closed")
	}
	fd := -1
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err == nil {
			for _, cm := range msgs {
				fds, err := unix.ParseUnixRights(&cm)
				if err != nil {
					continue
				}
				for _, f := range fds {
					if fd < 0 {
						fd = f
						unix.CloseOnExec(f)
					} else {
						unix.Close(f) // only one descriptor per message
					}
				}
			}
		}
	}
	var m message
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return message{}, -1, fmt.Errorf("bad message: %w", err)
	}
	return m, fd, nil
}

// Client talks to a Server. It is safe for concurrent use.
type Client struct {
	path string
	mu   sync.Mutex
	c    *net.UnixConn
}

// NewClient returns a client that connects on first use.
func NewClient(path string) *Client { return &Client{path: path} }

// Dial connects to the store at path.
func Dial(path string) (*Client, error) {
	cl := &Client{path: path}
	if err := cl.connect(); err != nil {
		return nil, err
	}
	return cl, nil
}

func (cl *Client) connect() error {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: cl.path, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("fd store %s: %w", cl.path, err)
	}
	cl.c = c
	return nil
}

// Close closes the connection; held descriptors stay in the store.
func (cl *Client) Close() error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.c == nil {
		return nil
	}
	return cl.c.Close()
}

// call sends one request and reads replies while each returns true. A
// send on a broken connection (the store restarted) redials once; a
// connection that breaks mid-reply is an error, so no reply is repeated.
func (cl *Client) call(m message, fd int, each func(message, int) bool) error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if cl.c == nil {
			if err = cl.connect(); err != nil {
				return err
			}
		}
		if err = send(cl.c, m, fd); err == nil {
			break
		}
		cl.c.Close()
		cl.c = nil
	}
	if err != nil {
		return fmt.Errorf("fd store %s: %w", cl.path, err)
	}
	for {
		r, rfd, err := recv(cl.c)
		if err != nil {
			cl.c.Close()
			cl.c = nil
			return fmt.Errorf("fd store %s: %w", cl.path, err)
		}
		if r.Op == "error" {
			return fmt.Errorf("fd store: %s", r.Error)
		}
		if !each(r, rfd) {
			return nil
		}
	}
}

// Put hands the store a duplicate of fd under key; the caller keeps fd.
func (cl *Client) Put(key string, meta any, fd int) error {
	b, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	return cl.call(message{Op: "put", Key: key, Meta: b}, fd, func(message, int) bool { return false })
}

// Delete makes the store close its copy under key.
func (cl *Client) Delete(key string) error {
	return cl.call(message{Op: "del", Key: key}, -1, func(message, int) bool { return false })
}

// Keys lists the keys held, without their descriptors.
func (cl *Client) Keys() ([]string, error) {
	var keys []string
	err := cl.call(message{Op: "keys"}, -1, func(r message, _ int) bool {
		json.Unmarshal(r.Meta, &keys)
		return false
	})
	return keys, err
}

// List returns a duplicate of every descriptor whose key has prefix. The
// caller owns the returned descriptors.
func (cl *Client) List(prefix string) ([]Entry, error) {
	var out []Entry
	err := cl.call(message{Op: "list", Key: prefix}, -1, func(r message, fd int) bool {
		if r.Op != "entry" {
			return false
		}
		out = append(out, Entry{Key: r.Key, Meta: r.Meta, Fd: fd})
		return true
	})
	if err != nil {
		for _, e := range out {
			unix.Close(e.Fd)
		}
		return nil, err
	}
	return out, nil
}
