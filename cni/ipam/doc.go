// Package ipam is berth's built-in, host-local-style IP address manager.
//
// It hands out single addresses from one subnet per network and keeps its
// state on the node's disk, because a CNI plugin is a short-lived process:
// the only thing that survives between ADD and DEL (and across reboots and
// crashes) is the filesystem.
//
// # On-disk layout
//
// All state of network N lives in <DataDir>/<N>/:
//
//	lock              flock(2) target; never deleted, never written
//	last_reserved_ip  the most recently handed-out address (a hint only)
//	198.18.10.7       one file per allocated address, JSON of the Attachment
//	fd00__7           IPv6 addresses use '_' instead of ':' in file names
//	.tmp-*            in-flight writes; stale ones are removed under the lock
//
// The address files are the single source of truth: an address is in use
// exactly when a file with its name exists. last_reserved_ip only makes
// allocation round-robin, so a just-released address is not immediately
// handed to the next container (which would confuse conntrack entries, ARP
// caches and anything else still remembering the old owner); losing or
// corrupting it costs nothing but that.
//
// # Concurrency
//
// Every operation that reads or changes the store holds an exclusive flock
// on the lock file for its whole duration. flock locks belong to an open file
// description and each operation opens its own, so the lock serialises
// goroutines of one process as well as separate plugin processes (the
// container runtime may run several ADD/DEL at once). The kernel drops the
// lock when a holder dies, even by SIGKILL, so a crashed plugin can never
// wedge the network. A per-Allocator mutex additionally keeps goroutines that
// share an Allocator from each parking an OS thread in flock.
//
// # Crash safety
//
// Files are never written in place. Each write goes to a fresh .tmp-* file in
// the same directory, is fsynced, renamed over its final name (rename is
// atomic within a directory) and then the directory itself is fsynced so the
// new name survives power loss. A reader therefore sees the old file or the
// complete new file, never a torn one. Because writers only create .tmp-*
// files while holding the lock, any .tmp-* file found by someone who has just
// taken the lock was left by a crashed writer and is removed.
//
// An address file that cannot be parsed (zero-length or garbage, e.g. from a
// tool that does not write atomically, or from disk damage) is kept as
// "allocated to an unknown attachment": handing its address out again could
// give two live containers the same IP, which is far worse than leaking one
// address. List reports such addresses with a zero Attachment, Release never
// matches them, and GC releases them, since by definition their owner is not
// among the valid attachments the runtime knows about.
package ipam
