package config

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Store backends: where gtund keeps its peers (those `gtund peer add`
// makes) and its leases.
const (
	// StoreFile keeps them in state_dir: one gateway, nothing to run.
	StoreFile = "file"
	// StoreEtcd keeps them in etcd, shared by every replica of a gateway;
	// state_dir keeps a cache of the last state seen.
	StoreEtcd = "etcd"
)

// StoreSection is the [store] table.
type StoreSection struct {
	Backend     string   `toml:"backend"`
	Endpoints   []string `toml:"endpoints,omitempty"`
	Prefix      string   `toml:"prefix,omitempty"`
	CAFile      string   `toml:"ca_file,omitempty"`
	CertFile    string   `toml:"cert_file,omitempty"`
	KeyFile     string   `toml:"key_file,omitempty"`
	DialTimeout string   `toml:"dial_timeout,omitempty"`
	Replica     string   `toml:"replica,omitempty"`
}

// Store is a validated [store].
type Store struct {
	Backend   string
	Endpoints []string // etcd client URLs (http:// or https://)
	Prefix    string   // every key of this gateway lives under it; no trailing slash
	// TLS to etcd: a CA to verify it, a client certificate to present.
	CAFile, CertFile, KeyFile string
	DialTimeout               time.Duration // connecting, and each request of a command
	Replica                   string        // this gtund's name among the replicas (default: the host name)
}

// Shared reports whether replicas share the store (etcd).
func (s Store) Shared() bool { return s.Backend == StoreEtcd }

// CacheDir is where an etcd-backed gtund keeps its copy of the last good
// state (peers and leases), read when etcd cannot be reached: state_dir for
// the file backend, whose state it is.
func CacheDir(stateDir string, st Store) string {
	if st.Shared() {
		return filepath.Join(stateDir, "etcd-cache")
	}
	return stateDir
}

func (l *loader) store(s StoreSection) Store {
	out := Store{Backend: s.Backend, Endpoints: s.Endpoints, Prefix: s.Prefix, CAFile: s.CAFile,
		CertFile: s.CertFile, KeyFile: s.KeyFile, Replica: s.Replica}
	if out.Backend == "" {
		out.Backend = StoreFile
	}
	out.DialTimeout = l.duration("store.dial_timeout", s.DialTimeout, 5*time.Second)
	if out.DialTimeout < 100*time.Millisecond || out.DialTimeout > time.Minute {
		l.errf("store.dial_timeout", "must be 100ms..1m, not %s", out.DialTimeout)
	}
	if out.Replica == "" {
		out.Replica, _ = os.Hostname()
	} else if !replicaRe(out.Replica) {
		l.errf("store.replica", "bad name %q: letters, digits, '.', '_' and '-' (up to 63)", out.Replica)
	}
	switch out.Backend {
	case StoreFile:
		for key, set := range map[string]bool{"endpoints": len(s.Endpoints) > 0, "prefix": s.Prefix != "", "ca_file": s.CAFile != "",
			"cert_file": s.CertFile != "", "key_file": s.KeyFile != ""} {
			if set {
				l.errf("store."+key, "only with backend = \"etcd\"")
			}
		}
		return out
	case StoreEtcd:
	default:
		l.errf("store.backend", "must be \"file\" or \"etcd\", not %q", out.Backend)
		return out
	}
	if len(out.Endpoints) == 0 {
		l.errf("store.endpoints", "required with backend = \"etcd\" (e.g. [\"https://10.0.0.5:2379\"])")
	}
	tlsWanted := false
	for _, e := range out.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			l.errf("store.endpoints", "bad endpoint %q: want http://HOST:PORT or https://HOST:PORT", e)
			continue
		}
		tlsWanted = tlsWanted || u.Scheme == "https"
	}
	if out.Prefix == "" {
		out.Prefix = "/gtun"
	}
	if !strings.HasPrefix(out.Prefix, "/") || strings.HasSuffix(out.Prefix, "/") || strings.ContainsAny(out.Prefix, " \t\n") {
		l.errf("store.prefix", "bad prefix %q: starts with '/', no trailing '/', no spaces (e.g. \"/gtun/cluster-b\")", out.Prefix)
	}
	if (out.CertFile == "") != (out.KeyFile == "") {
		l.errf("store.cert_file", "cert_file and key_file go together")
	}
	if (out.CAFile != "" || out.CertFile != "") && !tlsWanted {
		l.errf("store.endpoints", "TLS files are set but no endpoint is https://")
	}
	for key, f := range map[string]string{"ca_file": out.CAFile, "cert_file": out.CertFile, "key_file": out.KeyFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			l.errf("store."+key, "%v", err)
		}
	}
	return out
}

func replicaRe(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || (i > 0 && strings.ContainsRune("._-", c))
		if !ok {
			return false
		}
	}
	return true
}
