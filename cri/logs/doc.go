// Package logs implements the CRI container log format that kubelet reads
// (`kubectl logs`, log rotation) and a small append-only log file.
//
// Every record is one line:
//
//	<RFC3339Nano timestamp> SP <stream> SP <tag> SP <content> LF
//
// where stream is "stdout" or "stderr" and tag is "F" for the last (or only)
// piece of a line and "P" for a piece that continues in the next record of
// the same stream. Lines longer than the configured maximum are cut into P
// pieces followed by a final F piece; a line that is still open when the
// stream ends is written as P, because no newline was ever seen.
//
// API:
//
//	func Redirect(r io.Reader, w io.Writer, stream string, maxLen int, now func() time.Time) error
//	func Parse(line []byte) (ts time.Time, stream string, partial bool, content []byte, err error)
//	func ReadLines(r io.Reader) ([]Line, error)
//	func Open(path string) (*File, error)
//	func (f *File) Write(p []byte) (int, error)
//	func (f *File) Reopen() error
//	func (f *File) Close() error
//	func (f *File) Path() string
//
// The server runs one Redirect per stream (stdout and stderr) and points both
// at the same *File. Redirect hands each record to the writer in a single
// Write call and File serialises Writes, so records of the two streams never
// interleave inside a line.
package logs
