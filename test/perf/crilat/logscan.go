package crilat

import (
	"encoding/json"
	"sort"
	"strconv"
	"strings"
)

// LogScan is what one log said beyond info during the run.
type LogScan struct {
	Source   string       `json:"source"` // "berth-cri", "containerd", ...
	Warnings int          `json:"warnings"`
	Errors   int          `json:"errors"`
	Findings []LogFinding `json:"findings,omitempty"` // the most frequent distinct messages
	Note     string       `json:"note,omitempty"`     // e.g. only the log's tail was available
}

// LogFinding is one distinct warning or error message, with how often it
// appeared.
type LogFinding struct {
	Level   string `json:"level"` // "warn" or "error"
	Count   int    `json:"count"`
	Message string `json:"message"` // msg, plus err (warnings) when the line has them
	Example string `json:"example"` // the first such line, verbatim (truncated): time, IDs
}

// maxFindings per source kept in the report.
const maxFindings = 8

// ScanLog collects the warnings and errors of a log in either format the
// two runtimes write: berth-cri's slog JSON ({"level":"WARN","msg":...})
// and containerd's logrus text (level=warning msg="..." error="...").
// Identical messages are counted once, most frequent first; lines that
// differ only in IDs stay apart, which is fine for a short list.
func ScanLog(source, text string) LogScan {
	scan := LogScan{Source: source}
	type key struct{ level, msg string }
	counts := map[key]int{}
	examples := map[key]string{}
	var order []key
	for line := range strings.SplitSeq(text, "\n") {
		level, msg, ok := parseLogLine(line)
		if !ok {
			continue
		}
		if level == "warn" {
			scan.Warnings++
		} else {
			scan.Errors++
		}
		k := key{level, msg}
		if counts[k] == 0 {
			order = append(order, k)
			examples[k] = truncate(strings.TrimSpace(line), 600)
		}
		counts[k]++
	}
	sort.SliceStable(order, func(i, j int) bool { return counts[order[i]] > counts[order[j]] })
	for _, k := range order {
		if len(scan.Findings) == maxFindings {
			break
		}
		scan.Findings = append(scan.Findings, LogFinding{Level: k.level, Count: counts[k], Message: k.msg, Example: examples[k]})
	}
	return scan
}

// parseLogLine returns the normalised level ("warn"/"error") and message
// of a warning or error line; ok is false for every other line.
func parseLogLine(line string) (level, msg string, ok bool) {
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "{") {
		var j map[string]any
		if json.Unmarshal([]byte(line), &j) != nil {
			return "", "", false
		}
		lv, _ := j["level"].(string)
		level = normLevel(lv)
		if level == "" {
			return "", "", false
		}
		msg, _ = j["msg"].(string)
		if e, ok := j["err"].(string); ok && e != "" {
			msg += ": " + e
		}
		return level, truncate(msg, 300), true
	}
	fields := logfmt(line)
	level = normLevel(fields["level"])
	if level == "" {
		return "", "", false
	}
	msg = fields["msg"]
	// containerd puts the cause in error=, and a shim's stderr in
	// warnings= ("warnings while cleaning up dead shim").
	for _, k := range []string{"error", "warnings"} {
		if e := strings.TrimSpace(fields[k]); e != "" {
			msg += ": " + e
		}
	}
	return level, truncate(msg, 300), true
}

func normLevel(l string) string {
	switch strings.ToLower(l) {
	case "warn", "warning":
		return "warn"
	case "error", "fatal", "panic":
		return "error"
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// logfmt splits key=value pairs, values optionally double-quoted with Go
// escapes, as logrus writes them.
func logfmt(line string) map[string]string {
	out := map[string]string{}
	for len(line) > 0 {
		line = strings.TrimLeft(line, " ")
		eq := strings.IndexByte(line, '=')
		if eq <= 0 {
			break
		}
		k := line[:eq]
		if strings.ContainsRune(k, ' ') {
			// Not a key: skip the word.
			sp := strings.IndexByte(line, ' ')
			line = line[sp+1:]
			continue
		}
		rest := line[eq+1:]
		var v string
		if strings.HasPrefix(rest, `"`) {
			// Find the closing quote, honouring backslash escapes.
			end := 1
			for end < len(rest) && rest[end] != '"' {
				if rest[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(rest) {
				end = len(rest) - 1
			}
			if uq, err := strconv.Unquote(rest[:end+1]); err == nil {
				v = uq
			} else {
				v = rest[1:end]
			}
			line = rest[min(end+1, len(rest)):]
		} else {
			sp := strings.IndexByte(rest, ' ')
			if sp < 0 {
				sp = len(rest)
			}
			v, line = rest[:sp], rest[sp:]
		}
		out[k] = v
	}
	return out
}
