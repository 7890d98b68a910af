package splitdns

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/gtun/gtun/pkg/dnsproxy"
	"github.com/gtun/gtun/pkg/dnsrewrite"
	"github.com/gtun/gtun/pkg/lograte"
	"github.com/gtun/gtun/pkg/stats"
)

// upstreamTimeout bounds one exchange with one upstream server; a client's
// resolver usually gives up after 5 s, so two servers can be tried.
const upstreamTimeout = 2 * time.Second

// target is where the names under one domain go: a server's DNS servers,
// and with a dns_suffix the cluster domain they are asked under.
type target struct {
	server  string // the [[server]]'s name, for its counters
	servers []netip.Addr
	rename  *dnsrewrite.Rename // nil: asked as they are
}

// forwarder answers DNS on the tunnel address, sending each query to the
// servers of the longest domain that contains its name, or to the system's
// resolvers.
type forwarder struct {
	addr       netip.AddrPort
	resolvConf string
	log        *slog.Logger
	rate       *lograte.Limiter
	srv        *dnsproxy.Server
	busy       dnsproxy.Slots // queries in flight upstream, bounded

	routes atomic.Pointer[map[string]target] // by domain
	// testPort, when set, replaces port 53 of every upstream (tests).
	testPort uint16

	sysMu      sync.Mutex
	sysServers []string // host:port from resolv.conf
	sysMtime   time.Time

	queries stats.Reasons
	renamed stats.Reasons // answers given back under a dns_suffix, by server
}

func startForwarder(addr netip.AddrPort, resolvConf string, testPort uint16, log *slog.Logger) (*forwarder, error) {
	f := &forwarder{addr: addr, resolvConf: resolvConf, log: log, rate: lograte.New(log, 10*time.Second), testPort: testPort, busy: dnsproxy.NewSlots()}
	f.setRoutes(map[string]target{})
	srv, err := dnsproxy.Listen(addr, dns.HandlerFunc(f.serve), func(err error) {
		f.rate.Log(slog.LevelError, "serve", "dns forwarder stopped serving", "err", err)
	})
	if err != nil {
		return nil, fmt.Errorf("dns forwarder: %w", err)
	}
	f.srv = srv
	return f, nil
}

func (f *forwarder) setRoutes(r map[string]target) { f.routes.Store(&r) }

// close stops the forwarder; its sockets are closed when it returns.
func (f *forwarder) close() { f.srv.Close() }

// targetFor returns where name goes (longest matching domain), or false
// when the name is under no routed domain.
func (f *forwarder) targetFor(name string) (target, bool) {
	routes := *f.routes.Load()
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	for {
		if t, ok := routes[n]; ok {
			return t, true
		}
		dot := strings.IndexByte(n, '.')
		if dot < 0 {
			return target{}, false
		}
		n = n[dot+1:]
	}
}

func (f *forwarder) serve(w dns.ResponseWriter, req *dns.Msg) {
	network := dnsproxy.Network(w)
	if len(req.Question) != 1 {
		f.queries.Inc("refused")
		f.reply(w, req, new(dns.Msg).SetRcode(req, dns.RcodeFormatError))
		return
	}
	if !f.busy.Take() {
		f.queries.Inc("busy")
		f.reply(w, req, new(dns.Msg).SetRcode(req, dns.RcodeServerFailure))
		return
	}
	defer f.busy.Give()
	q := req.Question[0]
	var upstreams []string
	kind := "cluster"
	t, ok := f.targetFor(q.Name)
	if ok {
		for _, s := range t.servers {
			upstreams = append(upstreams, f.upstream(s, 53))
		}
	} else {
		kind = "system"
		upstreams = f.systemServers()
	}
	ask := req
	if t.rename != nil {
		ask = req.Copy() // the client's question stays for the answer
		t.rename.Request(ask)
	}
	resp, err := dnsproxy.Exchange(ask, network, upstreams, upstreamTimeout)
	if err != nil {
		f.queries.Inc(kind + "_failed")
		f.rate.Log(slog.LevelWarn, "fail:"+kind, "dns query failed upstream", "name", q.Name, "upstreams", upstreams, "err", err)
		f.reply(w, req, new(dns.Msg).SetRcode(req, dns.RcodeServerFailure))
		return
	}
	if t.rename != nil {
		t.rename.Response(resp, q)
		f.renamed.Inc(t.server)
	}
	f.queries.Inc(kind)
	f.reply(w, req, resp)
}

func (f *forwarder) reply(w dns.ResponseWriter, req, m *dns.Msg) {
	if err := dnsproxy.Reply(w, req, m); err != nil {
		f.rate.Log(slog.LevelDebug, "write", "dns reply not sent", "err", err)
	}
}

// systemServers are resolv.conf's nameservers, re-read when the file
// changes, never the forwarder itself (that would loop).
func (f *forwarder) systemServers() []string {
	f.sysMu.Lock()
	defer f.sysMu.Unlock()
	fi, err := os.Stat(f.resolvConf)
	if err != nil {
		f.rate.Log(slog.LevelWarn, "resolvconf", "cannot read the system resolvers", "file", f.resolvConf, "err", err)
		return f.sysServers
	}
	if fi.ModTime().Equal(f.sysMtime) && f.sysServers != nil {
		return f.sysServers
	}
	cc, err := dns.ClientConfigFromFile(f.resolvConf)
	if err != nil {
		f.rate.Log(slog.LevelWarn, "resolvconf", "cannot parse the system resolvers", "file", f.resolvConf, "err", err)
		return f.sysServers
	}
	var out []string
	for _, s := range cc.Servers {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		if netip.AddrPortFrom(a.Unmap(), parsePort(cc.Port)) == f.addr {
			continue
		}
		out = append(out, f.upstream(a.Unmap(), parsePort(cc.Port)))
	}
	f.sysServers, f.sysMtime = out, fi.ModTime()
	return out
}

func (f *forwarder) upstream(a netip.Addr, port uint16) string {
	if f.testPort != 0 {
		port = f.testPort
	}
	return netip.AddrPortFrom(a, port).String()
}

func parsePort(s string) uint16 {
	var p int
	if _, err := fmt.Sscan(s, &p); err != nil || p <= 0 || p > 65535 {
		return 53
	}
	return uint16(p)
}
