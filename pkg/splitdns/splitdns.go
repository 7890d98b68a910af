// Package splitdns applies the split DNS a gtund pushes: names under the
// cluster's domains (e.g. cluster.local) are resolved by the cluster's DNS
// servers through the tunnel, every other name by the host's own resolvers.
//
// The split itself is made by a small forwarder (github.com/miekg/dns) on
// the tunnel address, port 53, UDP and TCP: each name goes to the servers
// of the longest domain that holds it, renamed when the client gave that
// server's domain a suffix of its own (dns_suffix), or to the nameservers
// of /etc/resolv.conf. It stops, and its sockets close, on stop. Hosts
// reach it in one of two ways, chosen once at start:
//
//   - systemd-resolved, when it runs: the forwarder is the per-link DNS
//     server of gtun's TUN device, with routing-only domains
//     ("~cluster.local"), set with resolvectl and reverted on stop. The
//     host's resolver sends those names to the forwarder. resolved's link
//     servers serve every domain of the link alike, so they cannot tell
//     two clusters (or a renamed domain) apart: the forwarder does.
//   - otherwise hosts (this one, or the VPC's in gateway mode) point their
//     resolver at the forwarder.
//
// resolvectl is the interface systemd documents for per-link settings; the
// alternative, its D-Bus API, would need a D-Bus library for four calls.
package splitdns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gtun/gtun/pkg/dnsname"
	"github.com/gtun/gtun/pkg/dnsrewrite"
)

// Mode is how split DNS is applied.
type Mode string

const (
	ModeOff       Mode = "off"       // nothing pushed
	ModeResolved  Mode = "resolved"  // systemd-resolved per-link settings
	ModeForwarder Mode = "forwarder" // gtun's own forwarder on the tunnel address
)

// Route is one server's split DNS: names under Domains go to Servers.
type Route struct {
	Servers []netip.Addr
	Domains []string // lower case, no trailing dot
	// Renames are the domains of Domains that the servers know under
	// another name (dns_suffix): a name under Local is asked under Cluster.
	Renames []dnsrewrite.Rename
}

// Options configure a Manager.
type Options struct {
	Link   string // the TUN device
	Logger *slog.Logger
	// ResolvConf is the file the forwarder takes its other upstreams from
	// (default /etc/resolv.conf).
	ResolvConf string
	// Port the forwarder listens on (default 53).
	Port int
	// ForceForwarder skips the systemd-resolved detection (tests).
	ForceForwarder bool
	// testPort replaces port 53 of every upstream (tests).
	testPort uint16
}

// Manager keeps the split DNS of every server applied.
type Manager struct {
	o    Options
	log  *slog.Logger
	mode Mode // detected at New: resolved or forwarder

	mu      sync.Mutex
	routes  map[string]Route // by server name
	listen  netip.Addr       // forwarder: the address it listens on
	fwd     *forwarder
	applied string // resolved: the last settings applied, to skip repeats
	linkSet bool   // resolved: the link has our settings (revert them on stop)
	lastErr string
	closed  bool
}

// New detects how to apply split DNS on this host. Nothing changes until Set.
func New(o Options) *Manager {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ResolvConf == "" {
		o.ResolvConf = "/etc/resolv.conf"
	}
	if o.Port == 0 {
		o.Port = 53
	}
	m := &Manager{o: o, log: o.Logger, routes: map[string]Route{}, mode: ModeForwarder}
	if !o.ForceForwarder && resolvedRunning() {
		m.mode = ModeResolved
	}
	return m
}

// resolvedRunning reports whether systemd-resolved can take per-link
// settings: resolvectl is installed and the daemon answers it.
func resolvedRunning() bool {
	if _, err := exec.LookPath("resolvectl"); err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "resolvectl", "--no-pager", "status").Run() == nil
}

// Set records server's split DNS (a zero Route removes it) and the address
// the forwarder listens on (the tunnel address), and applies the result.
func (m *Manager) Set(server string, r Route, listen netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	if len(r.Servers) == 0 || len(r.Domains) == 0 {
		delete(m.routes, server)
	} else {
		m.routes[server] = r
	}
	if listen.IsValid() {
		m.listen = listen
	}
	m.applyLocked()
}

// Reapply puts the settings back, e.g. after the TUN device was recreated
// (resolved forgets a link's settings with the link).
func (m *Manager) Reapply() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.applied = ""
	m.applyLocked()
}

func (m *Manager) applyLocked() {
	err := m.applyForwarderLocked()
	if err == nil && m.mode == ModeResolved {
		err = m.applyResolvedLocked()
	}
	if err != nil {
		if err.Error() != m.lastErr {
			m.log.Error("split dns not applied", "mode", m.mode, "err", err)
		}
		m.lastErr = err.Error()
		return
	}
	m.lastErr = ""
}

// merged lists every domain with where its names go, and all servers and
// domains, sorted.
func (m *Manager) merged() (byDomain map[string]target, servers []netip.Addr, domains []string) {
	byDomain = map[string]target{}
	names := make([]string, 0, len(m.routes))
	for n := range m.routes {
		names = append(names, n)
	}
	sort.Strings(names) // a domain two servers push goes to the first by name
	for _, n := range names {
		r := m.routes[n]
		for _, d := range r.Domains {
			if _, ok := byDomain[d]; ok {
				continue
			}
			t := target{server: n, servers: r.Servers}
			for _, rn := range r.Renames {
				if dnsname.Under(d, rn.Local) {
					t.rename = &rn
				}
			}
			byDomain[d] = t
			domains = append(domains, d)
		}
		for _, s := range r.Servers {
			if !slices.Contains(servers, s) {
				servers = append(servers, s)
			}
		}
	}
	sort.Strings(domains)
	return byDomain, servers, domains
}

// applyResolvedLocked makes the forwarder the link's DNS server for the
// routed domains (after applyForwarderLocked), or reverts the link when
// there is none.
func (m *Manager) applyResolvedLocked() error {
	_, _, domains := m.merged()
	var fwd string
	if m.fwd != nil {
		fwd = m.fwd.addr.Addr().String()
		if m.fwd.addr.Port() != 53 {
			fwd = m.fwd.addr.String()
		}
	}
	want := fmt.Sprint(fwd, domains)
	if want == m.applied {
		return nil
	}
	if fwd == "" || len(domains) == 0 {
		if m.linkSet {
			if err := resolvectl("revert", m.o.Link); err != nil {
				return err
			}
			m.linkSet = false
		}
		m.applied = want
		return nil
	}
	domArgs := []string{"domain", m.o.Link}
	for _, d := range domains {
		domArgs = append(domArgs, "~"+d) // routing-only: no search suffix
	}
	for _, args := range [][]string{{"dns", m.o.Link, fwd}, domArgs, {"default-route", m.o.Link, "false"}} {
		if err := resolvectl(args...); err != nil {
			return err
		}
	}
	m.applied, m.linkSet = want, true
	m.log.Info("split dns set in systemd-resolved", "link", m.o.Link, "dns", fwd, "domains", domains)
	return nil
}

func resolvectl(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "resolvectl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("resolvectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (m *Manager) applyForwarderLocked() error {
	byDomain, _, _ := m.merged()
	if len(byDomain) == 0 || !m.listen.IsValid() {
		if m.fwd != nil {
			m.fwd.close()
			m.fwd = nil
			m.log.Info("split dns forwarder stopped")
		}
		return nil
	}
	if m.fwd != nil && m.fwd.addr.Addr() != m.listen {
		m.fwd.close() // the tunnel address changed
		m.fwd = nil
	}
	if m.fwd == nil {
		f, err := startForwarder(netip.AddrPortFrom(m.listen, uint16(m.o.Port)), m.o.ResolvConf, m.o.testPort, m.log)
		if err != nil {
			return err
		}
		m.fwd = f
		m.log.Info("split dns forwarder listening", "addr", f.addr.String())
	}
	m.fwd.setRoutes(byDomain)
	return nil
}

// Close removes what Set applied: reverts resolved's link settings or
// stops the forwarder.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	var errs []error
	if m.fwd != nil {
		m.fwd.close()
		m.fwd = nil
		m.log.Info("split dns forwarder stopped")
	}
	if m.mode == ModeResolved && m.linkSet {
		// A deleted TUN device took its settings along.
		if _, err := net.InterfaceByName(m.o.Link); err == nil {
			if err := resolvectl("revert", m.o.Link); err != nil {
				errs = append(errs, err)
			} else {
				m.log.Info("split dns removed from systemd-resolved", "link", m.o.Link)
			}
		}
	}
	return errors.Join(errs...)
}

// Status is what gtun status shows.
type Status struct {
	Mode    Mode     `json:"mode"`
	Listen  string   `json:"listen,omitempty"` // forwarder's address
	Domains []string `json:"domains,omitempty"`
	Servers []string `json:"servers,omitempty"`
	Error   string   `json:"error,omitempty"`
	// Queries the forwarder answered, by where they went ("cluster",
	// "system") or how they failed.
	Queries map[string]uint64 `json:"queries,omitempty"`
}

// Renamed is how many answers the forwarder gave back under server's
// dns_suffix.
func (m *Manager) Renamed(server string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fwd == nil {
		return 0
	}
	return m.fwd.renamed.Get(server)
}

// Status snapshots the manager.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, servers, domains := m.merged()
	st := Status{Mode: m.mode, Domains: domains, Error: m.lastErr}
	if len(domains) == 0 {
		st.Mode = ModeOff
	}
	for _, s := range servers {
		st.Servers = append(st.Servers, s.String())
	}
	if m.fwd != nil {
		st.Listen = m.fwd.addr.String()
		st.Queries = m.fwd.queries.Snapshot()
	}
	return st
}
