package server

import (
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/dnsproxy"
	"github.com/gtun/gtun/pkg/dnsrewrite"
	"github.com/gtun/gtun/pkg/stats"
)

// dnsUpstreamTimeout bounds one exchange with one of the cluster's DNS
// servers; a client's resolver gives up after about 5 s.
const dnsUpstreamTimeout = 2 * time.Second

// dnsProxy answers DNS on gtund's own tunnel address, port 53, while the
// served routes are mapped (server.map) and split DNS is configured: the
// cluster's DNS answers with real addresses, which a client of a mapped
// cluster cannot reach, so each query goes to the cluster's servers and
// the answer comes back with every address inside a real prefix given
// under its virtual one (dnsrewrite.Addresses); a reverse lookup of a
// virtual address is asked for the real one and answered under the name
// asked (dnsrewrite.Reverse). Clients are pushed this
// address as their DNS server instead of the cluster's, so the rewrite
// holds whichever resolver they use (systemd-resolved or gtun's
// forwarder). Only the peers whose allowed lets them reach a DNS server
// get there (the data plane's gateway rule), and only from the pool.
type dnsProxy struct {
	srv  *dnsproxy.Server
	pool netip.Prefix
	log  *slog.Logger
	conf atomic.Pointer[dnsProxyConf]
	busy dnsproxy.Slots // queries in flight upstream, bounded

	queries   stats.Reasons // answered, failed, refused, busy
	rewritten atomic.Uint64 // answers with an address rewritten
	records   atomic.Uint64 // addresses rewritten
	reversed  atomic.Uint64 // reverse lookups of virtual addresses, asked for the real ones
}

type dnsProxyConf struct {
	upstreams []string // the cluster's DNS servers, host:53
	maps      []dnsrewrite.Mapping
}

// dnsProxied reports whether gtund proxies DNS with this config: split
// DNS set and a map to rewrite its answers with.
func dnsProxied(d config.DNS, maps []config.Mapping) bool {
	return !d.IsZero() && len(maps) > 0
}

// syncDNSProxyLocked starts, updates or stops the proxy to follow s.dns and
// s.maps. Call with s.mu held.
func (s *Server) syncDNSProxyLocked() {
	if !dnsProxied(s.dns, s.maps) {
		if s.dnsProxy != nil {
			s.dnsProxy.srv.Close()
			s.dnsProxy = nil
			s.log.Info("dns proxy stopped")
		}
		return
	}
	conf := &dnsProxyConf{}
	for _, a := range s.dns.Servers {
		conf.upstreams = append(conf.upstreams, netip.AddrPortFrom(a, 53).String())
	}
	for _, m := range s.maps {
		conf.maps = append(conf.maps, dnsrewrite.Mapping{Real: m.Real, Virtual: m.Virtual})
	}
	if s.dnsProxy == nil {
		p := &dnsProxy{pool: s.cfg.Pool, log: s.log, busy: dnsproxy.NewSlots()}
		p.conf.Store(conf)
		srv, err := dnsproxy.Listen(netip.AddrPortFrom(s.cfg.Gateway, 53), dns.HandlerFunc(p.serve), func(err error) {
			s.rate.Log(slog.LevelError, "dns-serve", "dns proxy stopped serving", "err", err)
		})
		if err != nil {
			s.rate.Log(slog.LevelError, "dns-listen", "dns proxy not started; clients get the cluster's answers unmapped", "err", err)
			return
		}
		p.srv = srv
		s.dnsProxy = p
		s.log.Info("dns proxy listening; answers follow the map", "addr", srv.Addr, "upstreams", conf.upstreams)
		return
	}
	s.dnsProxy.conf.Store(conf)
}

func (p *dnsProxy) serve(w dns.ResponseWriter, req *dns.Msg) {
	// The data plane lets only allowed peers reach this address; a host of
	// the cluster's network that routes here is no client.
	if !p.pool.Contains(remoteAddr(w)) {
		p.queries.Inc("refused")
		return
	}
	if len(req.Question) != 1 {
		p.queries.Inc("refused")
		_ = dnsproxy.Reply(w, req, new(dns.Msg).SetRcode(req, dns.RcodeFormatError))
		return
	}
	if !p.busy.Take() {
		p.queries.Inc("busy")
		_ = dnsproxy.Reply(w, req, new(dns.Msg).SetRcode(req, dns.RcodeServerFailure))
		return
	}
	defer p.busy.Give()
	conf := p.conf.Load()
	ask := req
	// A reverse lookup of a virtual address is asked of the cluster for
	// the real one.
	rev, reverse := dnsrewrite.Reverse(req.Question[0].Name, conf.maps)
	if reverse {
		ask = req.Copy()
		rev.Request(ask)
	}
	resp, err := dnsproxy.Exchange(ask, dnsproxy.Network(w), conf.upstreams, dnsUpstreamTimeout)
	if err != nil {
		p.queries.Inc("failed")
		p.log.Debug("dns proxy: query failed upstream", "name", req.Question[0].Name, "err", err)
		_ = dnsproxy.Reply(w, req, new(dns.Msg).SetRcode(req, dns.RcodeServerFailure))
		return
	}
	n := dnsrewrite.Addresses(resp, conf.maps)
	if reverse {
		rev.Response(resp, req.Question[0])
		p.reversed.Add(1)
	}
	if n > 0 {
		p.rewritten.Add(1)
		p.records.Add(uint64(n))
	}
	p.queries.Inc("answered")
	_ = dnsproxy.Reply(w, req, resp)
}

func remoteAddr(w dns.ResponseWriter) netip.Addr {
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// stopDNSProxy stops the proxy at gtund's stop.
func (s *Server) stopDNSProxy() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dnsProxy != nil {
		s.dnsProxy.srv.Close()
		s.dnsProxy = nil
	}
}
