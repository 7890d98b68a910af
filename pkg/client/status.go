package client

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gtun/gtun/pkg/route"
	"github.com/gtun/gtun/pkg/session"
	"github.com/gtun/gtun/pkg/splitdns"
	"github.com/gtun/gtun/pkg/tun"
)

// Status is what `gtun status` prints.
type Status struct {
	Tun     string `json:"tun"`
	Offload bool   `json:"offload"` // TUN with virtio-net header and TSO; false: plain path
	Heals   Heals  `json:"heals"`
	// Fights counts, by heal kind (route, tun, gateway_table, ip_forward),
	// times something kept undoing a repair until repairs hit their rate
	// bound; Fighting lists the kinds fought over now.
	Fights   map[string]uint64 `json:"fights,omitempty"`
	Fighting []string          `json:"fighting,omitempty"`
	Gateway  *GatewayStatus    `json:"gateway,omitempty"` // nil: gateway mode off
	DNS      *splitdns.Status  `json:"dns,omitempty"`     // split DNS; nil before Run
	Drops    map[string]uint64 `json:"drops,omitempty"`
	Servers  []ServerStatus    `json:"servers"`
}

// GatewayStatus is gateway mode's state.
type GatewayStatus struct {
	Masquerade bool     `json:"masquerade"`
	Table      string   `json:"nftables_table"`
	SNAT       []string `json:"snat,omitempty"` // "10.244.0.0/16 from 100.64.240.2"
	TableHeals uint64   `json:"table_heals"`    // times the table was found deleted or changed and restored
	// ForwardHeals counts times net.ipv4.ip_forward was found off and
	// turned back on.
	ForwardHeals uint64 `json:"ip_forward_heals"`
}

// Heals counts the repairs gtun made to its routes and TUN device.
type Heals struct {
	Routes        uint64        `json:"routes"`
	LastRouteTook time.Duration `json:"last_route_took_ns"`
	Tun           uint64        `json:"tun"`
	LastTunTook   time.Duration `json:"last_tun_took_ns"`
}

// ServerStatus is one [[server]].
type ServerStatus struct {
	Name       string        `json:"name"`
	State      string        `json:"state"` // connecting, connected, reconnecting
	Since      time.Time     `json:"since"`
	Endpoint   string        `json:"endpoint,omitempty"`
	Transport  string        `json:"transport"`
	Cipher     string        `json:"cipher,omitempty"`
	Address    string        `json:"address,omitempty"`
	Gateway    string        `json:"gateway,omitempty"`
	Address6   string        `json:"address6,omitempty"` // the IPv6 tunnel address, when the server has pool6
	Gateway6   string        `json:"gateway6,omitempty"`
	MTU        int           `json:"mtu,omitempty"`
	RTT        time.Duration `json:"rtt_ns"`
	RxBytes    uint64        `json:"rx_bytes"`
	TxBytes    uint64        `json:"tx_bytes"`
	RxPackets  uint64        `json:"rx_packets"`
	TxPackets  uint64        `json:"tx_packets"`
	QueueDrops uint64        `json:"queue_drops"`
	// Rekeys counts key updates across reconnects: sent (gtun replaced its
	// send key), received (the server's).
	Rekeys session.Rekeys `json:"rekeys"`
	// KeyAge is how long gtun's current send key has been in use (while
	// connected).
	KeyAge        time.Duration `json:"key_age_ns,omitempty"`
	Reconnects    uint64        `json:"reconnects"`
	LastHandshake *time.Time    `json:"last_handshake,omitempty"`
	LastError     string        `json:"last_error,omitempty"`
	Routes        []RouteStatus `json:"routes"`
	// Subnets are this client's networks the server routes here
	// (site-to-site; gateway mode passes their packets on).
	Subnets []string `json:"subnets,omitempty"`
	// DNSDomains are the split DNS domains the server pushed that this
	// client applies; DNSRefused those it refused (dns_domains).
	DNSDomains []string        `json:"dns_domains,omitempty"`
	DNSRefused []RefusedDomain `json:"dns_refused,omitempty"`
	// DNSSuffix is the name this client gives the server's cluster domain
	// (dns_suffix); DNSRenamed counts the answers given back under it, and
	// DNSSuffixNote says why it renames nothing, when it does not.
	DNSSuffix string `json:"dns_suffix,omitempty"`
	// DNSMapped: the server pushed its own tunnel address as DNS server,
	// its proxy that gives the answers under its map's virtual prefixes.
	DNSMapped     bool   `json:"dns_mapped,omitempty"`
	DNSCluster    string `json:"dns_cluster_domain,omitempty"`
	DNSRenamed    uint64 `json:"dns_renamed_answers,omitempty"`
	DNSSuffixNote string `json:"dns_suffix_note,omitempty"`
	// Drops counts what the server sent that this client refused, by
	// reason (e.g. spoofed_source: a source outside the server's routes).
	Drops map[string]uint64 `json:"drops,omitempty"`
}

// RouteStatus is one desired route of a server.
type RouteStatus struct {
	Prefix    string `json:"prefix"`
	Installed bool   `json:"installed"`
	Note      string `json:"note,omitempty"` // why not installed
}

// Status snapshots the client's state.
func (c *Client) Status() Status {
	st := Status{Tun: c.cfg.Tun, Drops: c.drops.Snapshot(), Fights: c.book.Fights(), Fighting: c.book.Fighting()}
	st.Heals.Routes, st.Heals.LastRouteTook = c.book.Heal(route.HealKind)
	st.Heals.Tun, st.Heals.LastTunTook = c.book.Heal(tun.HealKind)
	if c.dev != nil {
		st.Offload = c.dev.Offload()
	}
	if c.dns != nil {
		d := c.dns.Status()
		st.DNS = &d
	}
	if c.cfg.Gateway {
		st.Gateway = &GatewayStatus{Masquerade: c.cfg.Masquerade, Table: NATTable(c.cfg.Tun), SNAT: c.natRules()}
		st.Gateway.TableHeals, _ = c.book.Heal(HealGatewayTable)
		st.Gateway.ForwardHeals, _ = c.book.Heal(HealIPForward)
	}
	installed := map[string]RouteStatus{}
	if c.routes != nil {
		for _, r := range c.routes.Status() {
			note := r.Reason
			if r.Conflict != "" {
				note = "conflict: " + r.Conflict
			}
			installed[r.Prefix.String()] = RouteStatus{Prefix: r.Prefix.String(), Installed: r.Installed, Note: note}
		}
	}
	for _, up := range c.servers() {
		sess := up.sess.Load()
		up.mu.Lock()
		ss := ServerStatus{Name: up.name, State: up.state, Since: up.since, Endpoint: up.endpoint,
			Transport: transportLabel(up.entry.Transport, up.transport), MTU: up.mtu, Reconnects: up.reconnects, LastError: up.lastError,
			RxBytes: up.closedRx, TxBytes: up.closedTx, RxPackets: up.closedRxPkts, TxPackets: up.closedTxPkts, Rekeys: up.closedRekeys}
		if t := up.tunnel.Load(); t.address.IsValid() {
			ss.Address, ss.Gateway = t.address.String(), t.gateway.String()
			if t.address6.IsValid() {
				ss.Address6, ss.Gateway6 = t.address6.String(), t.gateway6.String()
			}
		}
		if !up.lastHandshake.IsZero() {
			t := up.lastHandshake
			ss.LastHandshake = &t
		}
		for _, p := range up.subnetList {
			ss.Subnets = append(ss.Subnets, p.String())
		}
		ss.DNSDomains, ss.DNSRefused = slices.Clone(up.dnsApplied), slices.Clone(up.dnsRefused)
		ss.DNSSuffix, ss.DNSCluster, ss.DNSSuffixNote = up.entry.DNSSuffix, up.entry.DNSClusterDomain, up.dnsSuffixNote
		if gw := up.tunnel.Load().gateway; gw.IsValid() && slices.Contains(up.dns.Servers, gw) {
			ss.DNSMapped = true
		}
		ss.Drops = up.drops.Snapshot()
		for _, p := range up.desired {
			r, ok := installed[p.String()]
			if other, lost := up.conflicts[p]; lost {
				r = RouteStatus{Prefix: p.String(), Note: fmt.Sprintf("conflict: server %q has it", other)}
			} else if !ok {
				r = RouteStatus{Prefix: p.String(), Note: "pending"}
			}
			ss.Routes = append(ss.Routes, r)
		}
		up.mu.Unlock()
		if ss.DNSSuffix != "" && c.dns != nil {
			ss.DNSRenamed = c.dns.Renamed(up.name)
		}
		if sess != nil {
			ss.Cipher = sess.Cipher()
			ss.RTT = sess.RTT()
			ss.RxBytes += sess.Stats.RxBytes.Load()
			ss.TxBytes += sess.Stats.TxBytes.Load()
			ss.RxPackets += sess.Stats.RxPackets.Load()
			ss.TxPackets += sess.Stats.TxPackets.Load()
			ss.QueueDrops = sess.Stats.QueueDrops.Load()
			ss.Rekeys = ss.Rekeys.Add(sess.Rekeys())
			ss.KeyAge = sess.KeyAge()
		}
		st.Servers = append(st.Servers, ss)
	}
	return st
}

// transportLabel is what status shows: the running transport, and the
// policy when that is auto.
func transportLabel(configured, running string) string {
	switch {
	case running == "":
		return configured
	case configured == running:
		return running
	}
	return running + " (" + configured + ")"
}

// WriteStatus renders a status for humans.
func WriteStatus(w io.Writer, raw json.RawMessage) error {
	var st Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return err
	}
	mode := "offload (TSO super-packets)"
	if !st.Offload {
		mode = "plain (one packet per read)"
	}
	fmt.Fprintf(w, "tun %s, data path: %s\n", st.Tun, mode)
	if g := st.Gateway; g != nil {
		masq := "off (forwarded hosts keep their addresses)"
		if g.Masquerade {
			masq = "on"
			if len(g.SNAT) > 0 {
				masq += ": " + strings.Join(g.SNAT, ", ")
			}
		}
		fmt.Fprintf(w, "gateway mode: nftables table %s, masquerade %s", g.Table, masq)
		if g.TableHeals > 0 {
			fmt.Fprintf(w, ", table restored %d time(s)", g.TableHeals)
		}
		if g.ForwardHeals > 0 {
			fmt.Fprintf(w, ", ip_forward turned back on %d time(s)", g.ForwardHeals)
		}
		fmt.Fprintln(w)
	}
	if d := st.DNS; d != nil && d.Mode != splitdns.ModeOff {
		fmt.Fprintf(w, "split dns: %s via %s, ", strings.Join(d.Domains, ", "), strings.Join(d.Servers, ", "))
		switch d.Mode {
		case splitdns.ModeForwarder:
			fmt.Fprintf(w, "forwarder on %s", dash(d.Listen))
			if len(d.Queries) > 0 {
				fmt.Fprintf(w, " (queries %v)", d.Queries)
			}
		default:
			fmt.Fprintf(w, "set in systemd-resolved on %s, to the forwarder on %s", st.Tun, dash(d.Listen))
		}
		if d.Error != "" {
			fmt.Fprintf(w, "; ERROR: %s", d.Error)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "SERVER\tSTATE\tSINCE\tENDPOINT\tTRANSPORT\tCIPHER\tADDRESS\tRTT\tRX\tTX\tRECONNECTS\tLAST HANDSHAKE\tKEY AGE\tREKEYS RX/TX\n")
	for _, s := range st.Servers {
		hs, keyAge, addr := "-", "-", dash(s.Address)
		if s.Address6 != "" {
			addr += "," + s.Address6
		}
		if s.LastHandshake != nil {
			hs = ago(*s.LastHandshake)
		}
		if s.State == "connected" {
			keyAge = s.KeyAge.Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s (%d pkts)\t%s (%d pkts)\t%d\t%s\t%s\t%d/%d\n",
			s.Name, s.State, ago(s.Since), dash(s.Endpoint), s.Transport, dash(s.Cipher), addr, s.RTT.Round(10*time.Microsecond),
			bytesHuman(s.RxBytes), s.RxPackets, bytesHuman(s.TxBytes), s.TxPackets, s.Reconnects, hs, keyAge, s.Rekeys.Received, s.Rekeys.Sent)
	}
	tw.Flush()
	for _, s := range st.Servers {
		if s.LastError != "" {
			fmt.Fprintf(w, "\n%s: last error: %s\n", s.Name, s.LastError)
		}
		fmt.Fprintf(w, "\nroutes of %s via %s:\n", s.Name, st.Tun)
		if len(s.Routes) == 0 {
			fmt.Fprintln(w, "  (none yet)")
		}
		if len(s.Subnets) > 0 {
			fmt.Fprintf(w, "  subnets routed here by the server: %s\n", strings.Join(s.Subnets, ", "))
		}
		for _, r := range s.Routes {
			state := "installed"
			if !r.Installed {
				state = "MISSING"
			}
			if r.Note != "" {
				state += " (" + r.Note + ")"
			}
			fmt.Fprintf(w, "  %-20s %s\n", r.Prefix, state)
		}
		if len(s.DNSDomains) > 0 {
			fmt.Fprintf(w, "  split dns applied: %s", strings.Join(s.DNSDomains, ", "))
			if s.DNSMapped {
				fmt.Fprintf(w, " (via %s, the server's proxy: answers follow its map)", s.Gateway)
			}
			fmt.Fprintln(w)
		}
		for _, d := range s.DNSRefused {
			fmt.Fprintf(w, "  split dns REFUSED: %s (%s)\n", d.Domain, d.Reason)
		}
		if s.DNSSuffix != "" {
			if s.DNSSuffixNote != "" {
				fmt.Fprintf(w, "  dns suffix %s NOT APPLIED: %s\n", s.DNSSuffix, s.DNSSuffixNote)
			} else {
				fmt.Fprintf(w, "  dns suffix: %s names are asked as %s (%d answers renamed)\n", s.DNSSuffix, s.DNSCluster, s.DNSRenamed)
			}
		}
		if len(s.Drops) > 0 {
			fmt.Fprintf(w, "  drops: %v\n", s.Drops)
		}
	}
	if h := st.Heals; h.Routes+h.Tun > 0 {
		fmt.Fprintf(w, "\nheals: %d route(s), last took %v; %d tun repair(s), last took %v\n",
			h.Routes, h.LastRouteTook.Round(time.Microsecond), h.Tun, h.LastTunTook.Round(time.Microsecond))
	}
	if len(st.Fights) > 0 {
		fmt.Fprintf(w, "fights (something kept undoing it): %v", st.Fights)
		if len(st.Fighting) > 0 {
			fmt.Fprintf(w, "; fighting now over %s", strings.Join(st.Fighting, ", "))
		}
		fmt.Fprintln(w)
	}
	if len(st.Drops) > 0 {
		fmt.Fprintf(w, "\ndrops: %v\n", st.Drops)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func bytesHuman(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
