package server

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Status is what `gtund status` prints.
type Status struct {
	Listen            []string          `json:"listen"`
	Tun               string            `json:"tun"`
	Pool              string            `json:"pool"`
	Gateway           string            `json:"gateway"`
	Routes            []string          `json:"routes"`
	NAT               bool              `json:"nat"`
	Offload           bool              `json:"offload"` // TUN with virtio-net header and TSO; false: plain path
	Started           time.Time         `json:"started"`
	HandshakeFailures map[string]uint64 `json:"handshake_failures,omitempty"`
	Drops             map[string]uint64 `json:"drops,omitempty"`
	LeaseError        string            `json:"lease_error,omitempty"`
	Peers             []PeerStatus      `json:"peers"`
}

// PeerStatus is one configured peer. Its traffic counters are since gtund
// started, across the peer's sessions (rx: from the peer).
type PeerStatus struct {
	Name           string            `json:"name"`
	Connected      bool              `json:"connected"`
	Address        string            `json:"address,omitempty"`
	Endpoint       string            `json:"endpoint,omitempty"`
	Transport      string            `json:"transport,omitempty"`
	Cipher         string            `json:"cipher,omitempty"`
	ConnectedSince *time.Time        `json:"connected_since,omitempty"`
	LastKeepalive  *time.Time        `json:"last_keepalive,omitempty"`
	RxBytes        uint64            `json:"rx_bytes"`
	TxBytes        uint64            `json:"tx_bytes"`
	RxPackets      uint64            `json:"rx_packets"`
	TxPackets      uint64            `json:"tx_packets"`
	Drops          map[string]uint64 `json:"drops,omitempty"`
	RTT            time.Duration     `json:"rtt_ns"`   // keepalive round trip, as the client measured it
	Sessions       uint64            `json:"sessions"` // established since gtund started
}

// Status snapshots the server's state.
func (s *Server) Status() Status {
	st := Status{Listen: s.listenAddrs, Tun: s.cfg.Tun, Pool: s.cfg.Pool.String(), Gateway: s.cfg.Gateway.String(),
		NAT: s.cfg.NAT, Started: s.started, HandshakeFailures: s.hsFailures.Snapshot(), Drops: s.drops.Snapshot()}
	if s.tun != nil {
		st.Offload = s.tun.Offload()
	}
	s.mu.Lock()
	for _, r := range s.routes {
		st.Routes = append(st.Routes, r.String())
	}
	s.mu.Unlock()
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
		if c, ok := s.sessions[k]; ok {
			since := c.since
			ps.Connected, ps.Address, ps.Endpoint, ps.Transport, ps.ConnectedSince = true, c.addr.String(), c.endpoint, c.transport, &since
			ps.Cipher = c.sess.Cipher()
			if t := c.sess.LastKeepalive(); !t.IsZero() {
				ps.LastKeepalive = &t
			}
			ps.RTT = c.sess.RTT()
		}
		t := p.closed
		for c := range p.live { // the running session, and one being replaced
			t.add(&c.sess.Stats)
		}
		ps.RxBytes, ps.TxBytes, ps.RxPackets, ps.TxPackets = t.rxBytes, t.txBytes, t.rxPackets, t.txPackets
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
	fmt.Fprintf(w, "listen %s  tun %s (%s)  pool %s  gateway %s  nat %v\nroutes %s\n\n",
		strings.Join(st.Listen, ","), st.Tun, mode, st.Pool, st.Gateway, st.NAT, strings.Join(st.Routes, ", "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "PEER\tADDRESS\tENDPOINT\tTRANSPORT\tCONNECTED SINCE\tRX\tTX\tLAST KEEPALIVE\tDROPS\n")
	for _, p := range st.Peers {
		since, ka := "-", "-"
		if p.ConnectedSince != nil {
			since = p.ConnectedSince.Format(time.RFC3339)
		}
		if p.LastKeepalive != nil {
			ka = time.Since(*p.LastKeepalive).Round(100*time.Millisecond).String() + " ago"
		}
		if !p.Connected {
			since = "(not connected)"
		}
		drops := "-"
		if len(p.Drops) > 0 {
			drops = fmt.Sprint(p.Drops)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d B\t%d B\t%s\t%s\n", p.Name, orDash(p.Address), orDash(p.Endpoint),
			orDash(p.Transport), since, p.RxBytes, p.TxBytes, ka, drops)
	}
	tw.Flush()
	if len(st.HandshakeFailures) > 0 {
		fmt.Fprintf(w, "\nrefused handshakes: %v\n", st.HandshakeFailures)
	}
	if len(st.Drops) > 0 {
		fmt.Fprintf(w, "drops: %v\n", st.Drops)
	}
	if st.LeaseError != "" {
		fmt.Fprintf(w, "LEASES NOT PERSISTED: %s\n", st.LeaseError)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
