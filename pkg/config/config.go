// Package config loads gtun's and gtund's TOML files strictly: an unknown key,
// a bad CIDR, a missing key file or a pool that overlaps a served route is an
// error that names file:line and the key, and nothing runs on a bad file.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/gtun/gtun/pkg/dnsname"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/transport"
)

// Error is one problem in a config file.
type Error struct {
	File string
	Line int // 0 when the key is missing from the file
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Key == "" {
		return loc + ": " + e.Msg
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Key, e.Msg)
}

// IsConfigError reports whether err came from a bad config (exit code 2).
func IsConfigError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// Log is the [log] table shared by both daemons.
type Log struct {
	Level  string `toml:"level"`  // debug|info|warn|error
	Format string `toml:"format"` // text|json
}

// Logger builds the slog logger the [log] table describes.
func (l Log) Logger() *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(l.Level))
	opts := &slog.HandlerOptions{Level: lv}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

var typeErrRe = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// loader carries what every validation needs to name a file and line.
type loader struct {
	file  string
	lines *lineIndex
	errs  []error
}

func (l *loader) errf(key, format string, args ...any) {
	l.errs = append(l.errs, &Error{File: l.file, Line: l.lines.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (l *loader) err() error { return errors.Join(l.errs...) }

// decode parses the file into v and rejects keys v does not have.
func decode(path string, v any) (*loader, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: err.Error()}
	}
	return decodeBytes(path, src, v)
}

// decodeBytes is decode for the contents src of the file named path.
func decodeBytes(path string, src []byte, v any) (*loader, error) {
	l := &loader{file: path, lines: indexLines(string(src))}
	md, err := toml.Decode(string(src), v)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{File: path, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
		}
		// Type mismatches come back as plain errors: "toml: line N (last key "k"): msg".
		if m := typeErrRe.FindStringSubmatch(err.Error()); m != nil {
			n, _ := strconv.Atoi(m[1])
			key := m[2]
			if k, ok := l.lines.byLine[n]; ok {
				key = k
			}
			return nil, &Error{File: path, Line: n, Key: key, Msg: m[3]}
		}
		return nil, &Error{File: path, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
	}
	undecoded := md.Undecoded()
	reported := map[string]bool{}
	for _, k := range undecoded {
		key := k.String()
		parent := k[:len(k)-1].String()
		if reported[parent] {
			reported[key] = true // a child of an unknown table: the table is the error
			continue
		}
		reported[key] = true
		occurrences := l.lines.plain[key]
		if len(occurrences) == 0 { // e.g. a key of an inline table
			occurrences = []string{key}
		}
		for _, ik := range occurrences {
			l.errs = append(l.errs, &Error{File: path, Line: l.lines.line(ik), Key: ik, Msg: "unknown key"})
		}
	}
	return l, nil
}

func (l *loader) prefix(key, s string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		l.errf(key, "bad CIDR %q: %v", s, err)
		return p, false
	}
	if p != p.Masked() {
		l.errf(key, "CIDR %q has host bits set (did you mean %s?)", s, p.Masked())
		return p, false
	}
	return p, true
}

func (l *loader) prefixes(key string, in []string) []netip.Prefix {
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	for _, s := range in {
		p, ok := l.prefix(key, s)
		if !ok {
			continue
		}
		if seen[p] {
			l.errf(key, "%s listed twice", p)
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// domains validates a list of DNS domains: valid names, each once. The
// result is never nil.
func (l *loader) domains(key string, in []string) []string {
	out := []string{}
	for _, d := range in {
		n := dnsname.Normalize(d)
		switch {
		case !dnsname.Valid(n):
			l.errf(key, "bad domain %q (e.g. \"cluster.local\")", d)
		case slices.Contains(out, n):
			l.errf(key, "%q listed twice", n)
		default:
			out = append(out, n)
		}
	}
	return out
}

func (l *loader) privateKey(key, path string) secure.PrivateKey {
	if path == "" {
		l.errf(key, "required")
		return secure.PrivateKey{}
	}
	k, err := secure.LoadPrivateKeyFile(path)
	if err != nil {
		l.errf(key, "%v", err)
	}
	return k
}

func (l *loader) publicKey(key, s string) secure.PublicKey {
	if s == "" {
		l.errf(key, "required")
		return secure.PublicKey{}
	}
	k, err := secure.ParsePublicKey(s)
	if err != nil {
		l.errf(key, "bad public key: %v", err)
	}
	return k
}

func (l *loader) tunName(key string, s *string, def string) {
	if *s == "" {
		*s = def
	}
	if len(*s) >= 16 || strings.ContainsAny(*s, "/ \t%") {
		l.errf(key, "bad interface name %q (at most 15 characters, no '/', '%%' or spaces)", *s)
	}
}

func (l *loader) duration(key, s string, def time.Duration) time.Duration {
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		l.errf(key, "bad duration %q (use e.g. \"2s\")", s)
		return def
	}
	return d
}

func (l *loader) log(lg *Log) {
	if lg.Level == "" {
		lg.Level = "info"
	}
	if lg.Format == "" {
		lg.Format = "text"
	}
	switch lg.Level {
	case "debug", "info", "warn", "error":
	default:
		l.errf("log.level", "must be debug, info, warn or error, not %q", lg.Level)
	}
	switch lg.Format {
	case "text", "json":
	default:
		l.errf("log.format", "must be text or json, not %q", lg.Format)
	}
}

// endpoint validates host:port, adding the default port when it is missing.
func (l *loader) endpoint(key, s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			return net.JoinHostPort(s, strconv.Itoa(transport.DefaultPort))
		}
		l.errf(key, "bad address %q: %v", s, err)
		return s
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		l.errf(key, "bad port in %q", s)
	}
	if host == "" {
		l.errf(key, "missing host in %q", s)
	}
	return s
}

// fec checks KCP's forward error correction settings: both off, or a data
// and a parity shard count that Reed-Solomon accepts.
func (l *loader) fec(table string, data, parity int) {
	switch {
	case data == 0 && parity == 0:
	case data < 1 || data > 128:
		l.errf(table+".fec_data", "must be 1..128 data shards (or 0 with fec_parity 0 for no FEC), not %d", data)
	case parity < 1 || parity > 128:
		l.errf(table+".fec_parity", "must be 1..128 parity shards when fec_data is set, not %d", parity)
	}
}

// metricsListen validates the Prometheus endpoint's address: empty (off) or
// host:port with an explicit port; an empty host listens on every address.
func (l *loader) metricsListen(key, s string) string {
	if s == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		l.errf(key, "bad address %q (want host:port, e.g. \"127.0.0.1:9624\"): %v", s, err)
		return s
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		l.errf(key, "bad port in %q", s)
	}
	if host != "" && strings.ContainsAny(host, " /%") {
		l.errf(key, "bad host in %q", s)
	}
	return s
}
