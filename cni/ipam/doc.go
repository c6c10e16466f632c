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
//	attachments/      index: one file per attachment naming its address,
//	                  plus boot_id, the boot ID of the last index rebuild
//	.tmp-*            in-flight writes; stale ones are removed under the lock
//
// The address files are the single source of truth: an address is in use
// exactly when a file with its name exists. last_reserved_ip only makes
// allocation round-robin, so a just-released address is not immediately
// handed to the next container (which would confuse conntrack entries, ARP
// caches and anything else still remembering the old owner); losing or
// corrupting it costs nothing but that.
//
// The attachments/ index exists so that ADD, DEL and lookups cost the same
// few file operations whether the network holds ten allocations or sixty
// thousand: without it, finding out whether a container already holds an
// address means reading every address file. It is derived data, rebuilt from
// the address files after every reboot (see session.ensureIndex for why that
// is enough); deleting attachments/boot_id forces a rebuild.
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
// the store directory and is renamed over its final name (rename is atomic on
// one filesystem), so a reader sees the old file or the complete new file,
// never a torn one. Address files are also fsynced before the rename, and the
// directory after it, so an allocation survives power loss before it is
// returned; the hint and the index skip those fsyncs because losing them is
// harmless or repaired at the next boot. Because writers only create .tmp-*
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
