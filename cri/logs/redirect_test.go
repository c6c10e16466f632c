package logs

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

var fixedTime = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

func fixedNow() time.Time { return fixedTime }

// callWriter records every Write call separately.
type callWriter struct {
	calls [][]byte
	err   error // returned by every call when set
}

func (w *callWriter) Write(p []byte) (int, error) {
	w.calls = append(w.calls, append([]byte(nil), p...))
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

type rec struct {
	tag     string
	content string
}

func parseCalls(t *testing.T, calls [][]byte, stream string) []rec {
	t.Helper()
	var out []rec
	for i, c := range calls {
		if bytes.IndexByte(c, '\n') != len(c)-1 {
			t.Fatalf("write %d is not exactly one record: %q", i, c)
		}
		ts, s, partial, content, err := Parse(c)
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if !ts.Equal(fixedTime) || s != stream {
			t.Fatalf("write %d: ts=%v stream=%q", i, ts, s)
		}
		tag := "F"
		if partial {
			tag = "P"
		}
		out = append(out, rec{tag, string(content)})
	}
	return out
}

func TestRedirect(t *testing.T) {
	long := strings.Repeat("x", 10000)
	tests := []struct {
		name   string
		in     string
		maxLen int
		want   []rec
	}{
		{"empty input", "", 16, nil},
		{"one line", "hello\n", 16, []rec{{"F", "hello"}}},
		{"two lines", "a\nb\n", 16, []rec{{"F", "a"}, {"F", "b"}}},
		{"empty line", "\n", 16, []rec{{"F", ""}}},
		{"spaces kept", " a  b \n", 16, []rec{{"F", " a  b "}}},
		{"no newline at EOF", "abc", 16, []rec{{"P", "abc"}}},
		{"line then remainder", "x\ny", 16, []rec{{"F", "x"}, {"P", "y"}}},
		{"CRLF", "a\r\n", 16, []rec{{"F", "a"}}},
		{"CR inside line kept", "a\rb\n", 16, []rec{{"F", "a\rb"}}},
		{"only one CR dropped", "a\r\r\n", 16, []rec{{"F", "a\r"}}},
		{"CR at EOF kept", "abc\r", 16, []rec{{"P", "abc\r"}}},
		{"split into pieces", "abcdefghij\n", 4, []rec{{"P", "abcd"}, {"P", "efgh"}, {"F", "ij"}}},
		{"exactly maxLen", "abcd\n", 4, []rec{{"F", "abcd"}}},
		{"twice maxLen", "abcdefgh\n", 4, []rec{{"P", "abcd"}, {"F", "efgh"}}},
		{"maxLen plus CRLF", "abcd\r\n", 4, []rec{{"F", "abcd"}}},
		{"maxLen plus CR CR LF", "abcd\r\r\n", 4, []rec{{"P", "abcd"}, {"F", "\r"}}},
		{"maxLen plus CR then text", "abcd\rx\n", 4, []rec{{"P", "abcd"}, {"F", "\rx"}}},
		{"long remainder at EOF", "abcde", 4, []rec{{"P", "abcd"}, {"P", "e"}}},
		{"no limit", long + "\n", 0, []rec{{"F", long}}},
		{"negative means no limit", long + "\n", -1, []rec{{"F", long}}},
		{"line longer than read buffer but under limit", long + "\n", 16384, []rec{{"F", long}}},
		{"limit above read buffer", long + "\n", 4500, []rec{{"P", long[:4500]}, {"P", long[:4500]}, {"F", long[:1000]}}},
		// The read buffer is 16 bytes here, so the CR and LF arrive in
		// different reads.
		{"CRLF across reads", strings.Repeat("y", 16) + "\r\n", 16, []rec{{"F", strings.Repeat("y", 16)}}},
		{"CRLF across reads under limit", strings.Repeat("y", 15) + "\r\n", 16, []rec{{"F", strings.Repeat("y", 15)}}},
		{"UTF-8 bytes are not special", "héllo\n", 16, []rec{{"F", "héllo"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, stream := range []string{Stdout, Stderr} {
				// One-byte reads exercise the buffering paths that a pipe
				// delivering data in small chunks would take.
				for _, r := range []io.Reader{strings.NewReader(tc.in), iotest.OneByteReader(strings.NewReader(tc.in))} {
					w := &callWriter{}
					if err := Redirect(r, w, stream, tc.maxLen, fixedNow); err != nil {
						t.Fatal(err)
					}
					got := parseCalls(t, w.calls, stream)
					if len(got) != len(tc.want) {
						t.Fatalf("%s: got %d records %q, want %q", stream, len(got), got, tc.want)
					}
					for i := range got {
						if got[i] != tc.want[i] {
							t.Fatalf("%s: record %d = %q, want %q", stream, i, got[i], tc.want[i])
						}
					}
				}
			}
		})
	}
}

func TestRedirectExactBytes(t *testing.T) {
	var buf bytes.Buffer
	if err := Redirect(strings.NewReader("hi\nthere"), &buf, Stderr, 0, fixedNow); err != nil {
		t.Fatal(err)
	}
	want := "2024-05-06T07:08:09.123456789Z stderr F hi\n2024-05-06T07:08:09.123456789Z stderr P there\n"
	if buf.String() != want {
		t.Fatalf("got %q\nwant %q", buf.String(), want)
	}
}

func TestRedirectTrailingZerosTrimmed(t *testing.T) {
	// RFC3339Nano drops trailing zeros; kubelet parses both forms.
	now := func() time.Time { return time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC) }
	var buf bytes.Buffer
	if err := Redirect(strings.NewReader("x\n"), &buf, Stdout, 0, now); err != nil {
		t.Fatal(err)
	}
	if want := "2024-01-02T03:04:05Z stdout F x\n"; buf.String() != want {
		t.Fatalf("got %q want %q", buf.String(), want)
	}
}

func TestRedirectNilNow(t *testing.T) {
	var buf bytes.Buffer
	before := time.Now()
	if err := Redirect(strings.NewReader("x\n"), &buf, Stdout, 0, nil); err != nil {
		t.Fatal(err)
	}
	ts, _, _, _, err := Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if ts.Before(before.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
		t.Fatalf("timestamp %v not near now", ts)
	}
}

func TestRedirectInvalidStream(t *testing.T) {
	for _, s := range []string{"", "stdin", "stdout ", "STDOUT"} {
		if err := Redirect(strings.NewReader("x\n"), io.Discard, s, 0, fixedNow); err == nil {
			t.Errorf("stream %q: expected error", s)
		}
	}
}

func TestRedirectReadError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("a\nbc"), iotest.ErrReader(boom))
	w := &callWriter{}
	err := Redirect(r, w, Stdout, 0, fixedNow)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	got := parseCalls(t, w.calls, Stdout)
	want := []rec{{"F", "a"}, {"P", "bc"}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestRedirectKeepsDrainingAfterWriteError(t *testing.T) {
	boom := errors.New("disk full")
	w := &callWriter{err: boom}
	err := Redirect(strings.NewReader("a\nb\nc\n"), w, Stdout, 0, fixedNow)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the write error", err)
	}
	if len(w.calls) != 3 {
		t.Fatalf("got %d write attempts, want 3 (the input must be drained)", len(w.calls))
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		stream  string
		partial bool
		content string
		wantErr bool
	}{
		{"full", "2024-05-06T07:08:09.123456789Z stdout F hello world\n", Stdout, false, "hello world", false},
		{"partial", "2024-05-06T07:08:09Z stderr P abc", Stderr, true, "abc", false},
		{"empty content", "2024-05-06T07:08:09Z stdout F \n", Stdout, false, "", false},
		{"tag with extension", "2024-05-06T07:08:09Z stdout F:x y\n", Stdout, false, "y", false},
		{"partial tag with extension", "2024-05-06T07:08:09Z stdout P:a:b y", Stdout, true, "y", false},
		{"timezone offset", "2024-05-06T09:08:09.5+02:00 stdout F z", Stdout, false, "z", false},
		{"content keeps inner newline-free spaces", "2024-05-06T07:08:09Z stdout F  a ", Stdout, false, " a ", false},
		{"no fields", "garbage", "", false, "", true},
		{"empty", "", "", false, "", true},
		{"bad timestamp", "yesterday stdout F x", "", false, "", true},
		{"missing stream", "2024-05-06T07:08:09Z", "", false, "", true},
		{"missing tag", "2024-05-06T07:08:09Z stdout", "", false, "", true},
		{"missing content separator", "2024-05-06T07:08:09Z stdout F", "", false, "", true},
		{"unknown stream", "2024-05-06T07:08:09Z stdin F x", "", false, "", true},
		{"unknown tag", "2024-05-06T07:08:09Z stdout X x", "", false, "", true},
		{"long tag", "2024-05-06T07:08:09Z stdout FF x", "", false, "", true},
		{"empty tag", "2024-05-06T07:08:09Z stdout  x", "", false, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, stream, partial, content, err := Parse([]byte(tc.in))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("expected error, got stream=%q content=%q", stream, content)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if stream != tc.stream || partial != tc.partial || string(content) != tc.content {
				t.Fatalf("got (%q, %v, %q), want (%q, %v, %q)", stream, partial, content, tc.stream, tc.partial, tc.content)
			}
		})
	}
}

func TestReadLines(t *testing.T) {
	var buf bytes.Buffer
	if err := Redirect(strings.NewReader("one\ntwo"), &buf, Stdout, 0, fixedNow); err != nil {
		t.Fatal(err)
	}
	if err := Redirect(strings.NewReader("three\n"), &buf, Stderr, 0, fixedNow); err != nil {
		t.Fatal(err)
	}
	lines, err := ReadLines(&buf)
	if err != nil {
		t.Fatal(err)
	}
	want := []Line{
		{fixedTime, Stdout, false, []byte("one")},
		{fixedTime, Stdout, true, []byte("two")},
		{fixedTime, Stderr, false, []byte("three")},
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d", len(lines), len(want))
	}
	for i := range want {
		g, w := lines[i], want[i]
		if !g.Time.Equal(w.Time) || g.Stream != w.Stream || g.Partial != w.Partial || !bytes.Equal(g.Content, w.Content) {
			t.Fatalf("line %d = %+v, want %+v", i, g, w)
		}
	}

	lines, err = ReadLines(strings.NewReader("2024-05-06T07:08:09Z stdout F ok\nbroken\n"))
	if err == nil || len(lines) != 1 {
		t.Fatalf("malformed record: lines=%d err=%v", len(lines), err)
	}
}
