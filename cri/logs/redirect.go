package logs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"
)

// Stream names allowed in a record. They match runtime.Stdout and
// runtime.Stderr of the CRI API; kubelet rejects any other value.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// Tags of a record.
const (
	tagFull    = 'F'
	tagPartial = 'P'
)

// readBufSize bounds a single read from the container pipe. A pipe delivers
// at most 64 KiB at a time anyway; 4 KiB keeps the per-stream memory small
// for the many idle containers a node runs.
const readBufSize = 4096

// timeLayout is the timestamp format kubelet parses.
const timeLayout = time.RFC3339Nano

// Redirect reads r until EOF and writes it to w as CRI log records of the
// given stream ("stdout" or "stderr").
//
// maxLen > 0 caps the content of one record: longer lines become several
// "P" records followed by an "F" record. maxLen <= 0 means no limit (a line
// is then buffered until its newline arrives, however long it is).
// A "\r" directly before "\n" is dropped, so CRLF output reads like LF output.
// When r ends in the middle of a line, the rest is written as "P".
// now supplies the timestamps; nil means time.Now.
//
// Each record reaches w through exactly one Write call. A failing Write
// does not stop the copy: the container would block on a full pipe if
// nobody drained it, so Redirect keeps reading and returns the first write
// error once r is exhausted. A read error other than io.EOF is returned
// after the buffered content has been written.
func Redirect(r io.Reader, w io.Writer, stream string, maxLen int, now func() time.Time) error {
	if stream != Stdout && stream != Stderr {
		return fmt.Errorf("logs: invalid stream %q (want %q or %q)", stream, Stdout, Stderr)
	}
	if now == nil {
		now = time.Now
	}
	size := readBufSize
	if maxLen > 0 && maxLen < size {
		size = maxLen
	}
	br := bufio.NewReaderSize(r, size)
	e := &emitter{w: w, stream: stream, maxLen: maxLen, now: now}

	// pending holds the start of a line that did not fit in the reader's
	// buffer. It never grows beyond maxLen+size bytes when maxLen > 0,
	// because whole maxLen pieces are flushed as soon as they are known to
	// be followed by more content.
	var pending []byte
	for {
		frag, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			// frag ends with '\n': the line is complete.
			line := frag
			if len(pending) > 0 {
				pending = append(pending, frag...)
				line = pending
			}
			e.line(trimEOL(line), true)
			pending = pending[:0]
		case errors.Is(err, bufio.ErrBufferFull):
			// ReadSlice's result is only valid until the next read, so it
			// must be copied before reading on.
			pending = append(pending, frag...)
			pending = e.flushPieces(pending)
		default:
			pending = append(pending, frag...)
			if len(pending) > 0 {
				// No newline was seen: the remainder is a partial line.
				e.line(pending, false)
			}
			if err == io.EOF {
				return e.err
			}
			return err
		}
	}
}

// trimEOL drops the trailing "\n" and one "\r" before it.
func trimEOL(line []byte) []byte {
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line
}

// emitter formats and writes records, reusing one buffer.
type emitter struct {
	w      io.Writer
	stream string
	maxLen int
	now    func() time.Time
	buf    []byte
	err    error // first write error
}

// line writes content cut into maxLen pieces. All pieces but the last are
// partial; the last is full when complete is true (the line had a newline).
func (e *emitter) line(content []byte, complete bool) {
	for e.maxLen > 0 && len(content) > e.maxLen {
		e.record(tagPartial, content[:e.maxLen])
		content = content[e.maxLen:]
	}
	tag := byte(tagPartial)
	if complete {
		tag = tagFull
	}
	e.record(tag, content)
}

// flushPieces writes the leading maxLen pieces of an unfinished line that
// are certain to be followed by more content of the same line, and returns
// the rest, moved to the front of the same backing array.
//
// A trailing "\r" is not counted: if the next byte is "\n" it is dropped,
// and a line of exactly maxLen bytes plus CRLF must stay one "F" record.
func (e *emitter) flushPieces(pending []byte) []byte {
	if e.maxLen <= 0 {
		return pending
	}
	start := 0
	for {
		rest := pending[start:]
		n := len(rest)
		if n > 0 && rest[n-1] == '\r' {
			n--
		}
		if n <= e.maxLen {
			break
		}
		e.record(tagPartial, rest[:e.maxLen])
		start += e.maxLen
	}
	if start == 0 {
		return pending
	}
	return pending[:copy(pending, pending[start:])]
}

// record writes one record with a single Write call.
func (e *emitter) record(tag byte, content []byte) {
	b := e.now().AppendFormat(e.buf[:0], timeLayout)
	b = append(b, ' ')
	b = append(b, e.stream...)
	b = append(b, ' ', tag, ' ')
	b = append(b, content...)
	b = append(b, '\n')
	e.buf = b
	if _, err := e.w.Write(b); err != nil && e.err == nil {
		e.err = err
	}
}

// Line is one parsed record.
type Line struct {
	Time    time.Time
	Stream  string
	Partial bool
	Content []byte
}

// Parse splits one record. The trailing "\n", if present, is not part of
// content; content shares memory with line. Unknown tags after a ':' (for example "F:x") are accepted, as
// kubelet does, so that new tags can be added later.
func Parse(line []byte) (ts time.Time, stream string, partial bool, content []byte, err error) {
	line = bytes.TrimSuffix(line, []byte{'\n'})
	tsField, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok {
		return ts, "", false, nil, errors.New("logs: timestamp not found")
	}
	ts, err = time.Parse(timeLayout, string(tsField))
	if err != nil {
		return ts, "", false, nil, fmt.Errorf("logs: bad timestamp: %w", err)
	}
	streamField, rest, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		return ts, "", false, nil, errors.New("logs: stream not found")
	}
	stream = string(streamField)
	if stream != Stdout && stream != Stderr {
		return ts, "", false, nil, fmt.Errorf("logs: unknown stream %q", stream)
	}
	tagField, rest, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		return ts, "", false, nil, errors.New("logs: tag not found")
	}
	first, _, _ := bytes.Cut(tagField, []byte{':'})
	switch {
	case len(first) == 1 && first[0] == tagPartial:
		partial = true
	case len(first) == 1 && first[0] == tagFull:
	default:
		return ts, "", false, nil, fmt.Errorf("logs: unknown tag %q", tagField)
	}
	return ts, stream, partial, rest, nil
}

// ReadLines parses every record of r (a log file). It stops at the first
// malformed record and returns the records read so far with the error.
func ReadLines(r io.Reader) ([]Line, error) {
	var out []Line
	br := bufio.NewReader(r)
	for n := 1; ; n++ {
		raw, err := br.ReadBytes('\n')
		if len(raw) > 0 {
			ts, stream, partial, content, perr := Parse(raw)
			if perr != nil {
				return out, fmt.Errorf("record %d: %w", n, perr)
			}
			out = append(out, Line{Time: ts, Stream: stream, Partial: partial, Content: content})
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}
