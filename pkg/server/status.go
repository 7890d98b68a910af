package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/dgram"
	"github.com/gtun/gtun/pkg/guard"
	"github.com/gtun/gtun/pkg/ipam"
	"github.com/gtun/gtun/pkg/route"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/session"
	"github.com/gtun/gtun/pkg/store"
	"github.com/gtun/gtun/pkg/transport"
)

// Status is what `gtund status` prints.
type Status struct {
	Listen            []string          `json:"listen"`
	Tun               string            `json:"tun"`
	Pool              string            `json:"pool"`
	Gateway           string            `json:"gateway"`
	Pool6             string            `json:"pool6,omitempty"`
	Gateway6          string            `json:"gateway6,omitempty"`
	Routes            []string          `json:"routes"`
	Map               []string          `json:"map,omitempty"` // "REAL=VIRTUAL": clients are pushed VIRTUAL
	DNS               *DNSStatus        `json:"dns,omitempty"`
	NAT               bool              `json:"nat"`
	Offload           bool              `json:"offload"` // TUN with virtio-net header and TSO; false: plain path
	Started           time.Time         `json:"started"`
	HandshakeFailures map[string]uint64 `json:"handshake_failures,omitempty"`
	Handshakes        HandshakeStatus   `json:"handshakes"`
	// Datagrams is the UDP listener udp and kcp ride in: its sessions, cookies
	// sent under load, and the datagrams it dropped unopened, by reason.
	Datagrams *dgram.ListenerStats `json:"datagrams,omitempty"`
	Heals     map[string]uint64    `json:"heals,omitempty"` // by kind: nftables_table, ip_forward, leases_written, tun, route
	// Fights counts, by kind, times something kept undoing a repair until
	// repairs hit their rate bound; Fighting lists the kinds fought over now.
	Fights     map[string]uint64 `json:"fights,omitempty"`
	Fighting   []string          `json:"fighting,omitempty"`
	Drops      map[string]uint64 `json:"drops,omitempty"`
	LeaseError string            `json:"lease_error,omitempty"`
	// Store is where peers and leases live: file, or etcd and whether it
	// answers.
	Store store.Status `json:"store"`
	Peers []PeerStatus `json:"peers"`
}

// HandshakeStatus is the front door: handshakes in progress and the
// sources the guard remembers, and what the responder did with first
// messages (refused before any DH, DH by outcome, DH for strangers).
type HandshakeStatus struct {
	guard.Stats
	secure.HandshakeCounts
}

// DNSStatus is the split DNS pushed to clients.
type DNSStatus struct {
	Servers []string `json:"servers"`
	Domains []string `json:"domains"`
	// Proxy is gtund's DNS proxy on the gateway address (with a map): nil
	// when it does not run.
	Proxy *DNSProxyStatus `json:"proxy,omitempty"`
}

// DNSProxyStatus is what gtund's DNS proxy did: queries by outcome
// (answered, failed, refused, busy), answers with an address given under its
// virtual prefix, and the addresses so rewritten.
type DNSProxyStatus struct {
	Listen    string            `json:"listen"`
	Queries   map[string]uint64 `json:"queries"`
	Rewritten uint64            `json:"rewritten_answers"`
	Records   uint64            `json:"rewritten_records"`
	Reversed  uint64            `json:"reverse_lookups"` // of virtual addresses, asked for the real ones
}

// SubnetStatus is one of a peer's subnets (site-to-site) and whether gtund
// routes it into its TUN now.
type SubnetStatus struct {
	Prefix string `json:"prefix"`
	Routed bool   `json:"routed"`
	Note   string `json:"note,omitempty"` // why not routed
}

// PeerStatus is one configured peer. Its traffic counters are since gtund
// started, across the peer's sessions (rx: from the peer).
type PeerStatus struct {
	Name           string         `json:"name"`
	Connected      bool           `json:"connected"`
	Address        string         `json:"address,omitempty"`
	Address6       string         `json:"address6,omitempty"` // with server.pool6
	Endpoint       string         `json:"endpoint,omitempty"`
	Transport      string         `json:"transport,omitempty"`
	Cipher         string         `json:"cipher,omitempty"`
	ConnectedSince *time.Time     `json:"connected_since,omitempty"`
	LastKeepalive  *time.Time     `json:"last_keepalive,omitempty"`
	RxBytes        uint64         `json:"rx_bytes"`
	TxBytes        uint64         `json:"tx_bytes"`
	RxPackets      uint64         `json:"rx_packets"`
	TxPackets      uint64         `json:"tx_packets"`
	Subnets        []SubnetStatus `json:"subnets,omitempty"`
	// Drops counts this peer's packets gtund refused, by reason: "acl"
	// (destination outside its allowed prefixes), "spoofed_source" (source
	// neither its tunnel address nor in its subnets), and others.
	Drops    map[string]uint64 `json:"drops,omitempty"`
	RTT      time.Duration     `json:"rtt_ns"`   // keepalive round trip, as the client measured it
	Sessions uint64            `json:"sessions"` // established since gtund started
	// Rekeys counts key updates across the peer's sessions: sent (gtund's
	// send key replaced), received (the client's).
	Rekeys session.Rekeys `json:"rekeys"`
	// KeyAge is how long gtund's current send key of the session has been
	// in use (connected peers only).
	KeyAge time.Duration `json:"key_age_ns,omitempty"`
}

// Status snapshots the server's state.
func (s *Server) Status() Status {
	st := Status{Listen: s.listenAddrs, Tun: s.cfg.Tun, Pool: s.cfg.Pool.String(), Gateway: s.cfg.Gateway.String(),
		NAT: s.cfg.NAT, Started: s.started, HandshakeFailures: s.hsFailures.Snapshot(), Drops: s.drops.Snapshot(),
		Handshakes: HandshakeStatus{Stats: s.guard.Stats(), HandshakeCounts: s.responder.Counts()}, Heals: s.book.Heals(), Fights: s.book.Fights(), Fighting: s.book.Fighting()}
	if s.cfg.Pool6.IsValid() {
		st.Pool6, st.Gateway6 = s.cfg.Pool6.String(), s.cfg.Gateway6.String()
	}
	st.Store = store.Status{Backend: config.StoreFile, Connected: true, Since: s.started, CacheDir: s.cfg.StateDir}
	if s.mirror != nil {
		st.Store = s.mirror.Status()
	}
	if s.kcp != nil {
		ds := s.kcp.Stats()
		st.Datagrams = &ds
	}
	if s.dev != nil {
		st.Offload = s.dev.Offload()
	}
	s.mu.Lock()
	for _, r := range s.routes {
		st.Routes = append(st.Routes, r.String())
	}
	for _, m := range s.maps {
		st.Map = append(st.Map, m.String())
	}
	if !s.dns.IsZero() {
		st.DNS = &DNSStatus{Domains: s.dns.Domains}
		for _, a := range s.dns.Servers {
			st.DNS.Servers = append(st.DNS.Servers, a.String())
		}
		if p := s.dnsProxy; p != nil {
			st.DNS.Proxy = &DNSProxyStatus{Listen: p.srv.Addr.String(), Queries: p.queries.Snapshot(),
				Rewritten: p.rewritten.Load(), Records: p.records.Load(), Reversed: p.reversed.Load()}
		}
	}
	s.mu.Unlock()
	routed := map[netip.Prefix]route.RouteStatus{}
	if s.subnetRoutes != nil {
		for _, r := range s.subnetRoutes.Status() {
			routed[r.Prefix] = r
		}
	}
	if s.pool != nil {
		if err := s.pool.PersistError(); err != nil {
			st.LeaseError = err.Error()
		}
	}
	leases := map[string]string{}
	if s.pool != nil {
		for _, l := range s.pool.Leases() {
			leases[l.PublicKey] = l.Address
		}
	}
	s.mu.Lock()
	for k, p := range s.peers {
		ps := PeerStatus{Name: p.cfg.Name, Address: leases[k.String()], Drops: p.drops.Snapshot()}
		if p.cfg.Address.IsValid() {
			ps.Address = p.cfg.Address.String()
		}
		for _, sn := range p.cfg.Subnets {
			r, ok := routed[sn]
			ss := SubnetStatus{Prefix: sn.String(), Routed: ok && r.Installed}
			switch {
			case !ok:
				ss.Note = "peer not connected"
			case r.Conflict != "":
				ss.Note = "conflict: " + r.Conflict
			case !r.Installed:
				ss.Note = r.Reason
			}
			ps.Subnets = append(ps.Subnets, ss)
		}
		if a, err := netip.ParseAddr(ps.Address); err == nil && s.cfg.Pool6.IsValid() {
			ps.Address6 = ipam.Address6(s.cfg.Pool, s.cfg.Pool6, a).String()
		}
		if c, ok := s.sessions[k]; ok {
			since := c.since
			ps.Connected, ps.Address, ps.Endpoint, ps.Transport, ps.ConnectedSince = true, c.addr.String(), c.endpoint, c.transport, &since
			if ra := c.sess.RemoteAddr(); ra != nil && c.transport != transport.TCP {
				ps.Endpoint = ra.String() // a datagram session follows its client's NAT rebinding
			}
			ps.Cipher = c.sess.Cipher()
			if t := c.sess.LastKeepalive(); !t.IsZero() {
				ps.LastKeepalive = &t
			}
			ps.RTT = c.sess.RTT()
			ps.KeyAge = c.sess.KeyAge()
		}
		t := p.closed
		for c := range p.live { // the running session, and one being replaced
			t.add(c.sess)
		}
		ps.RxBytes, ps.TxBytes, ps.RxPackets, ps.TxPackets, ps.Rekeys = t.rxBytes, t.txBytes, t.rxPackets, t.txPackets, t.rekeys
		ps.Sessions = p.sessions
		st.Peers = append(st.Peers, ps)
	}
	s.mu.Unlock()
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Name < st.Peers[j].Name })
	return st
}

// WriteStatus renders a status for humans.
func WriteStatus(w io.Writer, raw json.RawMessage) error {
	var st Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return err
	}
	mode := "offload"
	if !st.Offload {
		mode = "plain"
	}
	fmt.Fprintf(w, "listen %s  tun %s (%s)  pool %s  gateway %s  nat %v\n",
		strings.Join(st.Listen, ","), st.Tun, mode, st.Pool, st.Gateway, st.NAT)
	if st.Pool6 != "" {
		fmt.Fprintf(w, "pool6 %s  gateway6 %s\n", st.Pool6, st.Gateway6)
	}
	fmt.Fprintf(w, "routes %s\n", strings.Join(st.Routes, ", "))
	if len(st.Map) > 0 {
		fmt.Fprintf(w, "map %s (real=virtual; clients see the virtual prefixes)\n", strings.Join(st.Map, ", "))
	}
	if st.DNS != nil {
		fmt.Fprintf(w, "dns %s via %s\n", strings.Join(st.DNS.Domains, ", "), strings.Join(st.DNS.Servers, ", "))
		if p := st.DNS.Proxy; p != nil {
			fmt.Fprintf(w, "dns proxy on %s, answers follow the map: %d answered, %d with addresses mapped (%d records), %d reverse lookups mapped, %d failed, %d refused, %d busy\n",
				p.Listen, p.Queries["answered"], p.Rewritten, p.Records, p.Reversed, p.Queries["failed"], p.Queries["refused"], p.Queries["busy"])
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "PEER\tADDRESS\tENDPOINT\tTRANSPORT\tCONNECTED SINCE\tRX\tTX\tLAST KEEPALIVE\tKEY AGE\tREKEYS RX/TX\tDROPS\n")
	for _, p := range st.Peers {
		since, ka, keyAge := "-", "-", "-"
		if p.ConnectedSince != nil {
			since = p.ConnectedSince.Format(time.RFC3339)
		}
		if p.LastKeepalive != nil {
			ka = time.Since(*p.LastKeepalive).Round(100*time.Millisecond).String() + " ago"
		}
		if !p.Connected {
			since = "(not connected)"
		} else {
			keyAge = p.KeyAge.Round(time.Second).String()
		}
		drops := dropsText(p.Drops)
		addr := orDash(p.Address)
		if p.Address6 != "" {
			addr += "," + p.Address6
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d B\t%d B\t%s\t%s\t%d/%d\t%s\n", p.Name, addr, orDash(p.Endpoint),
			orDash(p.Transport), since, p.RxBytes, p.TxBytes, ka, keyAge, p.Rekeys.Received, p.Rekeys.Sent, drops)
	}
	tw.Flush()
	for _, p := range st.Peers {
		if len(p.Subnets) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nsubnets of %s via %s:\n", p.Name, st.Tun)
		for _, sn := range p.Subnets {
			state := "routed"
			if !sn.Routed {
				state = "not routed"
			}
			if sn.Note != "" {
				state += " (" + sn.Note + ")"
			}
			fmt.Fprintf(w, "  %-20s %s\n", sn.Prefix, state)
		}
	}
	fmt.Fprintf(w, "\nhandshakes in progress: %d, %d of them in the known sources' reserve (from %d recent sources; %d known sources); evicted: %d\n",
		st.Handshakes.Pending, st.Handshakes.Reserved, st.Handshakes.Sources, st.Handshakes.KnownSources, st.Handshakes.Evicted)
	fmt.Fprintf(w, "handshake DH: %v, for strangers: %d\n", st.Handshakes.DH, st.Handshakes.DHForStrangers)
	if len(st.HandshakeFailures) > 0 {
		fmt.Fprintf(w, "refused handshakes: %v\n", st.HandshakeFailures)
	}
	if d := st.Datagrams; d != nil {
		load := ""
		if d.UnderLoad {
			load = ", under load (asking for cookies)"
		}
		fmt.Fprintf(w, "datagrams: %d sessions, %d cookies sent%s, dropped unopened: %s\n", d.Sessions, d.CookiesSent, load, dropsText(d.Dropped))
	}
	if len(st.Drops) > 0 {
		fmt.Fprintf(w, "drops: %v\n", st.Drops)
	}
	if len(st.Heals) > 0 {
		fmt.Fprintf(w, "healed: %v\n", st.Heals)
	}
	if len(st.Fights) > 0 {
		fmt.Fprintf(w, "fights (something kept undoing it): %v", st.Fights)
		if len(st.Fighting) > 0 {
			fmt.Fprintf(w, "; fighting now over %s", strings.Join(st.Fighting, ", "))
		}
		fmt.Fprintln(w)
	}
	if st.LeaseError != "" {
		fmt.Fprintf(w, "LEASES NOT PERSISTED: %s\n", st.LeaseError)
	}
	writeStore(w, st.Store)
	return nil
}

// dropsText lists drops as "acl=3 spoofed_source=1", sorted by reason.
func dropsText(m map[string]uint64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeStore is the store's line of the status.
func writeStore(w io.Writer, st store.Status) {
	if st.Backend != config.StoreEtcd {
		fmt.Fprintf(w, "store: file (%s)\n", st.CacheDir)
		return
	}
	state := "connected since " + st.Since.Format(time.RFC3339)
	if !st.Connected {
		state = "UNREACHABLE since " + st.Since.Format(time.RFC3339) + " (serving the cache in " + st.CacheDir + ")"
		if st.LastError != "" {
			state += ": " + st.LastError
		}
	}
	fmt.Fprintf(w, "store: etcd %s prefix %s as replica %s, %s, revision %d, errors %d\n",
		strings.Join(st.Endpoints, ","), st.Prefix, st.Replica, state, st.Revision, st.Errors)
}
