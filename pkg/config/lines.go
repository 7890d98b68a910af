package config

import (
	"strconv"
	"strings"
)

// lineIndex remembers on which line each key of a TOML file was written, so
// that every error can name file:line. BurntSushi/toml keeps positions to
// itself, and this file format is simple enough to index with a small scan.
type lineIndex struct {
	// indexed keys: "peer.1.address" (array tables numbered from 0)
	indexed map[string]int
	// plain keys as toml.MetaData names them ("peer.address"), with every
	// indexed key they stand for, in file order
	plain map[string][]string
	// byLine is the indexed key set on each line
	byLine map[int]string
}

func indexLines(src string) *lineIndex {
	li := &lineIndex{indexed: map[string]int{}, plain: map[string][]string{}, byLine: map[int]string{}}
	table, plainTable := "", ""
	arrays := map[string]int{}
	for i, raw := range strings.Split(src, "\n") {
		line := strings.TrimSpace(stripComment(raw))
		n := i + 1
		switch {
		case line == "":
		case strings.HasPrefix(line, "[["):
			name := strings.TrimSpace(strings.Trim(line, "[]"))
			idx := arrays[name]
			arrays[name] = idx + 1
			plainTable = name
			table = name + "." + strconv.Itoa(idx)
			li.note(table, plainTable, n)
		case strings.HasPrefix(line, "["):
			name := strings.TrimSpace(strings.Trim(line, "[]"))
			table, plainTable = name, name
			li.note(table, plainTable, n)
		default:
			eq := strings.IndexByte(line, '=')
			if eq <= 0 {
				continue // continuation of a multi-line array
			}
			key := strings.Trim(strings.TrimSpace(line[:eq]), `"'`)
			if strings.ContainsAny(key, " ,[{") {
				continue
			}
			li.note(join(table, key), join(plainTable, key), n)
		}
	}
	return li
}

func (li *lineIndex) note(indexed, plain string, n int) {
	if _, ok := li.indexed[indexed]; ok {
		return
	}
	li.indexed[indexed] = n
	li.plain[plain] = append(li.plain[plain], indexed)
	li.byLine[n] = indexed
}

// line finds the line of an indexed key, falling back to its parents (a key
// the file does not set is reported at its table's header, or line 0).
func (li *lineIndex) line(key string) int {
	for k := key; k != ""; {
		if n, ok := li.indexed[k]; ok {
			return n
		}
		dot := strings.LastIndexByte(k, '.')
		if dot < 0 {
			break
		}
		k = k[:dot]
	}
	return 0
}

func join(table, key string) string {
	if table == "" {
		return key
	}
	return table + "." + key
}

// stripComment drops a trailing # comment that is not inside a string.
func stripComment(s string) string {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#':
			return s[:i]
		}
	}
	return s
}
