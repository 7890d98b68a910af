package config

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// The effective config is what `check` summarises and `showconf` prints:
// every key with the value that applies, defaults filled in, the peers
// file merged. It is written back in the file's own form (ServerFile,
// ClientFile), so it is itself a valid config; it never holds a private
// key, only private_key_file.

// Summary says in one line what was loaded.
func (s *Server) Summary() string {
	inFile := 0
	for _, p := range s.Peers {
		if p.Source == s.PeersFile {
			inFile++
		}
	}
	return fmt.Sprintf("%s (%d in %s), listen %s (%s), public key %s",
		count(len(s.Peers), "peer"), inFile, s.PeersFile, s.Listen, strings.Join(s.Transports, ", "), s.PrivateKey.Public())
}

// Summary says in one line what was loaded.
func (c *Client) Summary() string {
	var names []string
	for _, s := range c.Servers {
		names = append(names, s.Name)
	}
	return fmt.Sprintf("%s (%s), public key %s", count(len(c.Servers), "server"), strings.Join(names, ", "), c.PrivateKey.Public())
}

// count is "1 peer", "3 peers".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// Effective returns the config as it applies, in the form of the file.
func (s *Server) Effective() ServerFile {
	f := ServerFile{Log: s.Log, Server: ServerSection{
		Listen:                 s.Listen,
		Transports:             s.Transports,
		PrivateKeyFile:         s.PrivateKeyFile,
		Tun:                    s.Tun,
		MTU:                    s.MTU,
		Pool:                   s.Pool.String(),
		Pool6:                  prefixString(s.Pool6),
		Routes:                 prefixStrings(s.Routes),
		Map:                    []string{},
		NAT:                    &s.NAT,
		StateDir:               s.StateDir,
		ControlSocket:          s.ControlSocket,
		MetricsListen:          s.MetricsListen,
		Keepalive:              durationString(s.Keepalive),
		DeadAfter:              s.DeadAfter,
		RekeyInterval:          durationString(s.RekeyInterval),
		Offload:                &s.Offload,
		FECData:                s.FECData,
		FECParity:              s.FECParity,
		HandshakeTimeout:       durationString(s.HandshakeTimeout),
		HandshakeRate:          int(s.Handshake.Rate),
		HandshakeBurst:         s.Handshake.Burst,
		MaxHandshakes:          s.Handshake.MaxPending,
		MaxHandshakesPerSource: s.Handshake.MaxPendingPerSource,
		MaxHandshakesKnown:     s.Handshake.MaxPendingKnown,
		KnownSourceTTL:         durationString(s.Handshake.KnownSourceTTL),
	}}
	f.Store = StoreSection{Backend: s.Store.Backend, Replica: s.Store.Replica}
	if s.Store.Shared() {
		f.Store.Endpoints, f.Store.Prefix, f.Store.CAFile, f.Store.CertFile, f.Store.KeyFile =
			s.Store.Endpoints, s.Store.Prefix, s.Store.CAFile, s.Store.CertFile, s.Store.KeyFile
		f.Store.DialTimeout = durationString(s.Store.DialTimeout)
	}
	for _, m := range s.Map {
		f.Server.Map = append(f.Server.Map, m.String())
	}
	if !s.DNS.IsZero() {
		f.Server.DNS = &DNSTOML{Domains: s.DNS.Domains}
		for _, a := range s.DNS.Servers {
			f.Server.DNS.Servers = append(f.Server.DNS.Servers, a.String())
		}
	}
	for _, p := range s.Peers {
		ps := PeerSection{Name: p.Name, PublicKey: p.PublicKey.String(), Allowed: prefixStrings(p.Allowed), Subnets: prefixStrings(p.Subnets)}
		if p.Address.IsValid() {
			ps.Address = p.Address.String()
		}
		f.Peer = append(f.Peer, ps)
	}
	return f
}

// Effective returns the config as it applies, in the form of the file.
func (c *Client) Effective() ClientFile {
	f := ClientFile{Log: c.Log, Client: ClientSection{
		PrivateKeyFile: c.PrivateKeyFile,
		Tun:            c.Tun,
		Gateway:        c.Gateway,
		ControlSocket:  c.ControlSocket,
		MetricsListen:  c.MetricsListen,
		Offload:        &c.Offload,
	}}
	if c.Gateway { // masquerade is an error without gateway
		f.Client.Masquerade = &c.Masquerade
	}
	for _, s := range c.Servers {
		e := ServerEntryTOML{Name: s.Name, Endpoints: s.Endpoints, Transport: s.Transport, PublicKey: s.PublicKey.String(),
			Routes: prefixStrings(s.Routes), FECData: s.FECData, FECParity: s.FECParity, Failback: &s.Failback,
			FailbackInterval: durationString(s.FailbackInterval), DNSSuffix: s.DNSSuffix, DNSClusterDomain: s.DNSClusterDomain,
			EndpointOrder: s.EndpointOrder}
		if s.DNSDomains != nil { // nil: the default policy, which the key's absence means
			e.DNSDomains = &s.DNSDomains
		}
		f.Server = append(f.Server, e)
	}
	return f
}

// WriteEffective writes the effective config as TOML.
func (s *Server) WriteEffective(w io.Writer) error {
	var fromFile []string
	for _, p := range s.Peers {
		if p.Source == s.PeersFile {
			fromFile = append(fromFile, p.Name)
		}
	}
	header := fmt.Sprintf("# The effective config of %s: every key with the value that\n# applies, defaults filled in.", s.File)
	if len(fromFile) > 0 {
		header += fmt.Sprintf(" Peers merged from %s: %s.", s.PeersFile, strings.Join(fromFile, ", "))
	}
	header += fmt.Sprintf("\n# gtund's public key (for clients' [[server]] public_key): %s\n", s.PrivateKey.Public())
	return writeTOML(w, header, s.Effective())
}

// WriteEffective writes the effective config as TOML.
func (c *Client) WriteEffective(w io.Writer) error {
	header := fmt.Sprintf("# The effective config of %s: every key with the value that\n# applies, defaults filled in. A [[server]] without dns_domains takes the\n# default policy.\n# gtun's public key (for gtund's [[peer]] public_key): %s\n", c.File, c.PrivateKey.Public())
	return writeTOML(w, header, c.Effective())
}

func writeTOML(w io.Writer, header string, v any) error {
	if _, err := io.WriteString(w, header+"\n"); err != nil {
		return err
	}
	enc := toml.NewEncoder(w)
	enc.Indent = ""
	return enc.Encode(v)
}

// prefixStrings renders prefixes; never nil, so that an empty list is
// shown as [] rather than left out.
func prefixStrings(ps []netip.Prefix) []string {
	out := []string{}
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

// durationString is d as an operator writes it: "2m", not "2m0s".
func durationString(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// prefixString is p, or "" (the key's "none") when p is zero.
func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}
