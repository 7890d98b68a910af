// Package splitdns applies the split DNS a gtund pushes: names under the
// cluster's domains (e.g. cluster.local) are resolved by the cluster's DNS
// servers through the tunnel, every other name by the host's own resolvers.
//
// Two ways, chosen once at start:
//
//   - systemd-resolved, when it runs: per-link DNS servers and routing-only
//     domains ("~cluster.local") on gtun's TUN device, set with resolvectl
//     and reverted on stop. The host's resolver then does the split itself.
//   - otherwise a small forwarder (github.com/miekg/dns) on the tunnel
//     address, port 53, UDP and TCP: cluster names go to the pushed servers
//     (routed into the TUN), the rest to the nameservers of /etc/resolv.conf.
//     Hosts (this one, or the VPC's in gateway mode) point their resolver at
//     it. It stops, and its sockets close, on stop.
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
	var err error
	switch m.mode {
	case ModeResolved:
		err = m.applyResolvedLocked()
	default:
		err = m.applyForwarderLocked()
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

// merged lists every domain with its servers, and all servers, sorted.
func (m *Manager) merged() (byDomain map[string][]netip.Addr, servers []netip.Addr, domains []string) {
	byDomain = map[string][]netip.Addr{}
	names := make([]string, 0, len(m.routes))
	for n := range m.routes {
		names = append(names, n)
	}
	sort.Strings(names) // a domain two servers push goes to the first by name
	for _, n := range names {
		r := m.routes[n]
		for _, d := range r.Domains {
			if _, ok := byDomain[d]; !ok {
				byDomain[d] = r.Servers
				domains = append(domains, d)
			}
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

func (m *Manager) applyResolvedLocked() error {
	_, servers, domains := m.merged()
	want := fmt.Sprint(servers, domains)
	if want == m.applied {
		return nil
	}
	if len(servers) == 0 {
		if err := resolvectl("revert", m.o.Link); err != nil {
			return err
		}
		m.applied = want
		return nil
	}
	dnsArgs := []string{"dns", m.o.Link}
	for _, s := range servers {
		dnsArgs = append(dnsArgs, s.String())
	}
	domArgs := []string{"domain", m.o.Link}
	for _, d := range domains {
		domArgs = append(domArgs, "~"+d) // routing-only: no search suffix
	}
	for _, args := range [][]string{dnsArgs, domArgs, {"default-route", m.o.Link, "false"}} {
		if err := resolvectl(args...); err != nil {
			return err
		}
	}
	m.applied = want
	m.log.Info("split dns set in systemd-resolved", "link", m.o.Link, "servers", servers, "domains", domains)
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
	if m.mode == ModeResolved && m.applied != "" {
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
