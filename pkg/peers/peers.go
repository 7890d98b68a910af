// Package peers edits gtund's peers file (state_dir/peers.toml): the
// [[peer]] tables that `gtund peer add` and `gtund peer remove` manage and
// gtund reads in addition to its config. Every change is made under an
// exclusive lock, validated together with the whole config before it is
// written, and written atomically (temp file and rename, mode 0600), so two
// commands at once never lose each other's peer and gtund never reads half
// a file.
package peers

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"

	"golang.org/x/sys/unix"

	"github.com/gtun/gtun/pkg/atomicfile"
	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/ipam"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/store"
)

// UsageError is a request that cannot be done as asked (a name taken, an
// address in use, a peer that is not in the peers file): exit code 2.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &UsageError{fmt.Sprintf(format, args...)} }

// IsUsage reports whether err is the caller's mistake (a bad request or a
// bad config) rather than a failure.
func IsUsage(err error) bool {
	var u *UsageError
	var c *store.ConflictError
	return errors.As(err, &u) || errors.As(err, &c) || config.IsConfigError(err)
}

// nameRe is what `peer add` accepts as a name: it ends up in logs, metrics
// labels and file names.
var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

const header = `# gtund peers file: [[peer]] tables added by "gtund peer add" and removed by
# "gtund peer remove". gtund reads it in addition to its config (same keys as
# [[peer]] there; a name or key defined in both is an error). Rewritten on
# every change: comments here are not kept.
`

// Add appends peer to the peers file of the gtund config at cfgPath and
// returns the config as it is with the new peer. The peer's name must be
// new, its address (if any) inside the pool and used by nobody (fixed
// address or lease), its allowed prefixes within the served routes.
func Add(cfgPath string, peer config.PeerSection) (*config.Server, error) {
	if !nameRe.MatchString(peer.Name) {
		return nil, usagef("bad peer name %q: use letters, digits, '.', '_' and '-' (up to 63, starting with a letter or digit)", peer.Name)
	}
	cfg, err := config.LoadServer(cfgPath)
	if err != nil {
		return nil, err
	}
	if cfg.Store.Shared() {
		return addShared(cfgPath, cfg, peer)
	}
	return locked(cfgPath, func(cfg *config.Server) (*config.Server, error) {
		for _, p := range cfg.Peers {
			if p.Name == peer.Name {
				return nil, usagef("peer %q already exists (in %s)", peer.Name, p.Source)
			}
		}
		if err := check(cfg, peer); err != nil {
			return nil, err
		}
		list, err := read(cfg.PeersFile)
		if err != nil {
			return nil, err
		}
		return write(cfgPath, cfg.PeersFile, append(list, peer))
	})
}

// addShared adds peer to etcd, checked as gtund would load it: this
// replica's config with etcd's peers and the new one as its peers file.
// The check runs inside etcd's transaction loop, so it sees every peer
// another replica added meanwhile.
func addShared(cfgPath string, cfg *config.Server, peer config.PeerSection) (*config.Server, error) {
	if err := checkPeer(cfg, peer); err != nil {
		return nil, err
	}
	e, err := store.Dial(cfg.Store)
	if err != nil {
		return nil, err
	}
	defer e.Close()
	var out *config.Server
	err = e.AddPeer(peer, func(list []config.PeerSection) error {
		src, err := Encode(list)
		if err != nil {
			return err
		}
		out, err = config.LoadServerWithPeers(cfgPath, src)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// removeShared removes the peer called name from etcd.
func removeShared(cfgPath string, cfg *config.Server, name string) (*config.Server, error) {
	e, err := store.Dial(cfg.Store)
	if err != nil {
		return nil, err
	}
	defer e.Close()
	if _, err := e.RemovePeer(name); err != nil {
		var c *store.ConflictError
		if errors.As(err, &c) {
			for _, p := range cfg.Peers {
				if p.Name == name && p.Source == cfg.File {
					return nil, usagef("peer %q is defined in %s, not in etcd: remove it there and reload gtund", name, p.Source)
				}
			}
		}
		return nil, err
	}
	return cfg, nil
}

// locked runs edit with the peers file locked and the config at cfgPath
// loaded under the lock, as it is now (another add or remove may just have
// written the file).
func locked(cfgPath string, edit func(cfg *config.Server) (*config.Server, error)) (*config.Server, error) {
	cfg, err := config.LoadServer(cfgPath) // where the peers file is
	if err != nil {
		return nil, err
	}
	unlock, err := lock(cfg.PeersFile)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if cfg, err = config.LoadServer(cfgPath); err != nil {
		return nil, err
	}
	return edit(cfg)
}

// check validates a new peer against the config, with messages about the
// request (the whole config is validated again before it is written).
func check(cfg *config.Server, peer config.PeerSection) error {
	if err := checkPeer(cfg, peer); err != nil {
		return err
	}
	if peer.Address != "" {
		return addressFree(cfg, peer)
	}
	return nil
}

// checkPeer is check without the leases (which etcd checks itself in the
// transaction that adds the peer).
func checkPeer(cfg *config.Server, peer config.PeerSection) error {
	k, err := secure.ParsePublicKey(peer.PublicKey)
	if err != nil {
		return usagef("bad public key: %v", err)
	}
	for _, p := range cfg.Peers {
		if p.PublicKey == k {
			return usagef("that public key is already peer %q's (in %s)", p.Name, p.Source)
		}
	}
	for _, s := range peer.Allowed {
		a, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			return usagef("--allowed %q: not a CIDR", s)
		case a != a.Masked():
			return usagef("--allowed %s has host bits set (did you mean %s?)", s, a.Masked())
		case !packet.Within(a, cfg.Routes):
			return usagef("--allowed %s is not within the routes gtund serves (%v)", a, cfg.Routes)
		}
	}
	if peer.Address != "" {
		a, err := netip.ParseAddr(peer.Address)
		if err != nil {
			return usagef("bad address %q", peer.Address)
		}
		if !cfg.Pool.Contains(a) || a == cfg.Pool.Addr() || a == cfg.Gateway || a == ipam.Broadcast(cfg.Pool) {
			return usagef("address %s is not a client address of pool %s (the network, broadcast and %s, gtund's own, are not)", a, cfg.Pool, cfg.Gateway)
		}
		for _, p := range cfg.Peers {
			if p.Address == a {
				return usagef("address %s is the fixed address of peer %q", a, p.Name)
			}
		}
	}
	return nil
}

// addressFree refuses an address that is not a client address of the pool
// or that another peer holds: gtund would take a lease away from a
// connected client otherwise.
func addressFree(cfg *config.Server, peer config.PeerSection) error {
	a, _ := netip.ParseAddr(peer.Address) // checkPeer parsed it
	leases, err := ipam.ReadLeases(cfg.StateDir)
	if err != nil {
		return err
	}
	for _, l := range leases {
		if l.Address == a.String() && l.PublicKey != peer.PublicKey {
			return usagef("address %s is leased to peer %q", a, l.Name)
		}
	}
	return nil
}

// Remove deletes the peer called name from the peers file; peers defined in
// the config itself are the operator's to edit.
func Remove(cfgPath, name string) (*config.Server, error) {
	cfg, err := config.LoadServer(cfgPath)
	if err != nil {
		return nil, err
	}
	if cfg.Store.Shared() {
		return removeShared(cfgPath, cfg, name)
	}
	return locked(cfgPath, func(cfg *config.Server) (*config.Server, error) {
		list, err := read(cfg.PeersFile)
		if err != nil {
			return nil, err
		}
		for i, p := range list {
			if p.Name == name {
				return write(cfgPath, cfg.PeersFile, append(list[:i:i], list[i+1:]...))
			}
		}
		for _, p := range cfg.Peers {
			if p.Name == name {
				return nil, usagef("peer %q is defined in %s, not in the peers file: remove it there and reload gtund", name, p.Source)
			}
		}
		return nil, usagef("no peer %q", name)
	})
}

// read returns the peers file's entries (none when it does not exist).
func read(path string) ([]config.PeerSection, error) {
	src, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return config.ParsePeersFile(path, src)
}

// write validates the config with list as its peers file, then writes it.
func write(cfgPath, path string, list []config.PeerSection) (*config.Server, error) {
	src, err := Encode(list)
	if err != nil {
		return nil, err
	}
	cfg, err := config.LoadServerWithPeers(cfgPath, src)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(path, src); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Encode renders a peers file. Keys left empty are left out.
func Encode(list []config.PeerSection) ([]byte, error) { return config.EncodePeers(header, list) }

// lock takes an exclusive lock next to the peers file (created with its
// directory if needed); the returned func releases it.
func lock(peersFile string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(peersFile), 0o700); err != nil {
		return nil, fmt.Errorf("create state_dir: %w", err)
	}
	f, err := os.OpenFile(peersFile+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock peers file: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil // closing the descriptor releases the lock
}
