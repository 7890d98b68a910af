package splitdns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/gtun/gtun/pkg/lograte"
	"github.com/gtun/gtun/pkg/stats"
)

// upstreamTimeout bounds one exchange with one upstream server; a client's
// resolver usually gives up after 5 s, so two servers can be tried.
const upstreamTimeout = 2 * time.Second

// forwarder answers DNS on the tunnel address, sending each query to the
// servers of the longest pushed domain that contains its name, or to the
// system's resolvers.
type forwarder struct {
	addr       netip.AddrPort
	resolvConf string
	log        *slog.Logger
	rate       *lograte.Limiter
	udp, tcp   *dns.Server

	routes atomic.Pointer[map[string][]netip.Addr] // domain -> servers
	// testPort, when set, replaces port 53 of every upstream (tests).
	testPort uint16

	sysMu      sync.Mutex
	sysServers []string // host:port from resolv.conf
	sysMtime   time.Time

	queries stats.Reasons
}

func startForwarder(addr netip.AddrPort, resolvConf string, testPort uint16, log *slog.Logger) (*forwarder, error) {
	f := &forwarder{addr: addr, resolvConf: resolvConf, log: log, rate: lograte.New(log, 10*time.Second), testPort: testPort}
	empty := map[string][]netip.Addr{}
	f.routes.Store(&empty)
	// IP_FREEBIND: the tunnel address may be missing for a moment (the TUN
	// device is being repaired); the sockets stay bound to it regardless.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", addr.String())
	if err != nil {
		return nil, fmt.Errorf("dns forwarder: listen udp %s: %w", addr, err)
	}
	ln, err := lc.Listen(context.Background(), "tcp4", addr.String())
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("dns forwarder: listen tcp %s: %w", addr, err)
	}
	h := dns.HandlerFunc(f.serve)
	f.udp = &dns.Server{PacketConn: pc, Handler: h}
	f.tcp = &dns.Server{Listener: ln, Handler: h, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	started := make(chan struct{}, 2)
	f.udp.NotifyStartedFunc = func() { started <- struct{}{} }
	f.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	for _, s := range []*dns.Server{f.udp, f.tcp} {
		go func() {
			if err := s.ActivateAndServe(); err != nil {
				f.rate.Log(slog.LevelError, "serve", "dns forwarder stopped serving", "err", err)
			}
		}()
	}
	<-started
	<-started
	return f, nil
}

func (f *forwarder) setRoutes(r map[string][]netip.Addr) { f.routes.Store(&r) }

// close stops both servers; their sockets are closed when it returns.
func (f *forwarder) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = f.udp.ShutdownContext(ctx)
	_ = f.tcp.ShutdownContext(ctx)
}

// serversFor returns the pushed servers for name (longest matching domain),
// or nil when the name is not under any pushed domain.
func (f *forwarder) serversFor(name string) []netip.Addr {
	routes := *f.routes.Load()
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	for {
		if s, ok := routes[n]; ok {
			return s
		}
		dot := strings.IndexByte(n, '.')
		if dot < 0 {
			return nil
		}
		n = n[dot+1:]
	}
}

func (f *forwarder) serve(w dns.ResponseWriter, req *dns.Msg) {
	network := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	if len(req.Question) != 1 {
		f.queries.Inc("refused")
		f.reply(w, new(dns.Msg).SetRcode(req, dns.RcodeFormatError))
		return
	}
	var upstreams []string
	kind := "cluster"
	if servers := f.serversFor(req.Question[0].Name); servers != nil {
		for _, s := range servers {
			upstreams = append(upstreams, f.upstream(s, 53))
		}
	} else {
		kind = "system"
		upstreams = f.systemServers()
	}
	resp, err := f.exchange(req, network, upstreams)
	if err != nil {
		f.queries.Inc(kind + "_failed")
		f.rate.Log(slog.LevelWarn, "fail:"+kind, "dns query failed upstream", "name", req.Question[0].Name, "upstreams", upstreams, "err", err)
		f.reply(w, new(dns.Msg).SetRcode(req, dns.RcodeServerFailure))
		return
	}
	f.queries.Inc(kind)
	f.reply(w, resp)
}

func (f *forwarder) reply(w dns.ResponseWriter, m *dns.Msg) {
	if err := w.WriteMsg(m); err != nil {
		f.rate.Log(slog.LevelDebug, "write", "dns reply not sent", "err", err)
	}
}

// exchange asks each upstream in turn; a truncated UDP answer is asked
// again over TCP.
func (f *forwarder) exchange(req *dns.Msg, network string, upstreams []string) (*dns.Msg, error) {
	if len(upstreams) == 0 {
		return nil, errors.New("no upstream servers (none in " + f.resolvConf + ")")
	}
	var errs []error
	for _, up := range upstreams {
		c := &dns.Client{Net: network, Timeout: upstreamTimeout}
		resp, _, err := c.Exchange(req, up)
		if err == nil && resp.Truncated && network == "udp" {
			c.Net = "tcp"
			resp, _, err = c.Exchange(req, up)
		}
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", up, err))
	}
	return nil, errors.Join(errs...)
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
