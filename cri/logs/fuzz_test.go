package logs

import (
	"bytes"
	"testing"
)

// FuzzRedirect checks that Redirect followed by Parse gives back the input:
// every complete line (minus one "\r" before its "\n"), in order, and the
// unterminated remainder as partial records. It also checks the invariants
// the server relies on: one record per Write, and no content longer than
// maxLen.
func FuzzRedirect(f *testing.F) {
	f.Add([]byte("hello\nworld\n"), uint8(0))
	f.Add([]byte("abcdefghij\n"), uint8(4))
	f.Add([]byte("abcd\r\n\r\n"), uint8(4))
	f.Add([]byte("no newline"), uint8(3))
	f.Add([]byte("\r\r\n\n\r"), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, limit uint8) {
		maxLen := int(limit % 40) // 0 means unlimited
		w := &callWriter{}
		if err := Redirect(bytes.NewReader(in), w, Stdout, maxLen, fixedNow); err != nil {
			t.Fatal(err)
		}

		// Expected records, computed from a plain split on '\n'.
		var want [][]byte // complete lines
		rest := in
		for {
			i := bytes.IndexByte(rest, '\n')
			if i < 0 {
				break
			}
			want = append(want, bytes.TrimSuffix(rest[:i], []byte{'\r'}))
			rest = rest[i+1:]
		}

		var got [][]byte
		var cur []byte
		var sawPartialTail bool
		for i, c := range w.calls {
			if bytes.IndexByte(c, '\n') != len(c)-1 {
				t.Fatalf("write %d is not one record: %q", i, c)
			}
			_, stream, partial, content, err := Parse(c)
			if err != nil {
				t.Fatalf("write %d: %v (%q)", i, err, c)
			}
			if stream != Stdout {
				t.Fatalf("stream %q", stream)
			}
			if maxLen > 0 && len(content) > maxLen {
				t.Fatalf("record of %d bytes exceeds maxLen %d", len(content), maxLen)
			}
			cur = append(cur, content...)
			if partial {
				sawPartialTail = true
				continue
			}
			sawPartialTail = false
			got = append(got, cur)
			cur = nil
		}
		if len(got) != len(want) {
			t.Fatalf("got %d full lines, want %d", len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("line %d = %q, want %q", i, got[i], want[i])
			}
		}
		if !bytes.Equal(cur, rest) {
			t.Fatalf("partial tail = %q, want %q", cur, rest)
		}
		if len(rest) > 0 && !sawPartialTail {
			t.Fatal("unterminated remainder was not written as P")
		}
	})
}
