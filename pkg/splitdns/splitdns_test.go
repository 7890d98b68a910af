package splitdns

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/gtun/gtun/pkg/dnsrewrite"
)

// fakeDNS answers every A question at ip:port (UDP and TCP) with addr,
// and counts queries.
func fakeDNS(t *testing.T, ip string, port uint16, addr string) *atomic.Int32 {
	t.Helper()
	at := net.JoinHostPort(ip, strconv.Itoa(int(port)))
	pc, err := net.ListenPacket("udp4", at)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", at)
	if err != nil {
		t.Fatal(err)
	}
	n := new(atomic.Int32)
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		n.Add(1)
		m := new(dns.Msg).SetReply(r)
		rr, _ := dns.NewRR(r.Question[0].Name + " 30 IN A " + addr)
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go srv.ActivateAndServe()
		t.Cleanup(func() { srv.Shutdown() })
	}
	return n
}

// freePort is a port free for UDP and TCP on 127.0.0.2 and 127.0.0.3.
func freePort(t *testing.T) uint16 {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp4", "127.0.0.2:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		pc.Close()
		ok := true
		for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
			at := net.JoinHostPort(ip, strconv.Itoa(port))
			ln, err1 := net.Listen("tcp4", at)
			pc, err2 := net.ListenPacket("udp4", at)
			if err1 == nil {
				ln.Close()
			}
			if err2 == nil {
				pc.Close()
			}
			ok = ok && err1 == nil && err2 == nil
		}
		if ok {
			return uint16(port)
		}
	}
	t.Fatal("no free port")
	return 0
}

func ask(t *testing.T, network string, at netip.AddrPort, name string) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 3 * time.Second}
	resp, _, err := c.Exchange(new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeA), at.String())
	if err != nil {
		t.Fatalf("%s query %s: %v", network, name, err)
	}
	return resp
}

func answer(m *dns.Msg) string {
	if len(m.Answer) != 1 {
		return dns.RcodeToString[m.Rcode]
	}
	return m.Answer[0].(*dns.A).A.String()
}

// Cluster names go to the pushed server, others to resolv.conf's, over UDP
// and TCP; a resolv.conf entry pointing at the forwarder itself is skipped;
// Close frees the port.
func TestForwarderSplits(t *testing.T) {
	up := freePort(t)
	clusterN := fakeDNS(t, "127.0.0.2", up, "10.96.0.10")
	systemN := fakeDNS(t, "127.0.0.3", up, "192.0.2.7")
	port := freePort(t)
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(conf, []byte("nameserver 127.0.0.3\n"), 0o644)
	m := New(Options{Link: "lo", ResolvConf: conf, Port: int(port), ForceForwarder: true, testPort: up})
	m.Set("hk", Route{Servers: []netip.Addr{netip.MustParseAddr("127.0.0.2")}, Domains: []string{"cluster.local"}}, netip.MustParseAddr("127.0.0.1"))
	if st := m.Status(); st.Mode != ModeForwarder || st.Listen != "127.0.0.1:"+strconv.Itoa(int(port)) {
		t.Fatalf("status %+v", st)
	}
	f := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	for _, network := range []string{"udp", "tcp"} {
		if got := answer(ask(t, network, f, "demo.default.svc.cluster.local")); got != "10.96.0.10" {
			t.Errorf("%s cluster name: %s", network, got)
		}
		if got := answer(ask(t, network, f, "example.org")); got != "192.0.2.7" {
			t.Errorf("%s other name: %s", network, got)
		}
	}
	if clusterN.Load() != 2 || systemN.Load() != 2 {
		t.Errorf("queries: cluster %d system %d, want 2 and 2", clusterN.Load(), systemN.Load())
	}
	if st := m.Status(); st.Queries["cluster"] != 2 || st.Queries["system"] != 2 {
		t.Errorf("counted %v", st.Queries)
	}
	// Removing the route stops the forwarder and frees the port.
	m.Set("hk", Route{}, netip.Addr{})
	if st := m.Status(); st.Mode != ModeOff || st.Listen != "" {
		t.Errorf("after removal: %+v", st)
	}
	pc, err := net.ListenPacket("udp4", f.String())
	if err != nil {
		t.Fatalf("port still taken after the forwarder stopped: %v", err)
	}
	pc.Close()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

// The forwarder never sends a query to itself, whatever resolv.conf says.
func TestForwarderSkipsItself(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(conf, []byte("nameserver 127.0.0.1\nnameserver 127.0.0.2\n"), 0o644)
	f := &forwarder{addr: netip.MustParseAddrPort("127.0.0.1:53"), resolvConf: conf}
	if got := f.systemServers(); len(got) != 1 || got[0] != "127.0.0.2:53" {
		t.Errorf("system servers %v, want only 127.0.0.2:53", got)
	}
}

func TestTargetForLongestDomain(t *testing.T) {
	a, b := netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.96.0.11")
	f := &forwarder{}
	f.setRoutes(map[string]target{"cluster.local": {servers: []netip.Addr{a}}, "svc.cluster.local": {servers: []netip.Addr{b}}})
	for name, want := range map[string][]netip.Addr{
		"demo.default.svc.cluster.local.": {b},
		"Pod.Cluster.Local.":              {a},
		"cluster.local.":                  {a},
		"notcluster.local.":               nil,
		"example.org.":                    nil,
	} {
		got, ok := f.targetFor(name)
		if ok != (want != nil) || len(got.servers) != len(want) || (len(want) > 0 && got.servers[0] != want[0]) {
			t.Errorf("%s: %v, want %v", name, got.servers, want)
		}
	}
}

// Two servers whose clusters both call themselves cluster.local, renamed
// by the client to hk and sz: each name goes to its own cluster's DNS
// under cluster.local and comes back under the client's name (question,
// owner names, CNAME targets), over UDP and TCP; counted per server.
func TestForwarderRenames(t *testing.T) {
	up := freePort(t)
	hk := cnameDNS(t, "127.0.0.2", up, "10.244.1.20", 1)
	sz := cnameDNS(t, "127.0.0.3", up, "10.244.1.21", 1)
	port := freePort(t)
	m := New(Options{Link: "lo", ResolvConf: filepath.Join(t.TempDir(), "none"), Port: int(port), ForceForwarder: true, testPort: up})
	defer m.Close()
	lo := netip.MustParseAddr("127.0.0.1")
	m.Set("hk", Route{Servers: []netip.Addr{netip.MustParseAddr("127.0.0.2")}, Domains: []string{"hk"},
		Renames: []dnsrewrite.Rename{{Local: "hk", Cluster: "cluster.local"}}}, lo)
	m.Set("sz", Route{Servers: []netip.Addr{netip.MustParseAddr("127.0.0.3")}, Domains: []string{"sz"},
		Renames: []dnsrewrite.Rename{{Local: "sz", Cluster: "cluster.local"}}}, lo)
	f := netip.AddrPortFrom(lo, port)
	for _, network := range []string{"udp", "tcp"} {
		for suffix, want := range map[string]string{"hk": "10.244.1.20", "sz": "10.244.1.21"} {
			resp := ask(t, network, f, "Web.default.svc."+suffix)
			if len(resp.Answer) != 2 || resp.Question[0].Name != "Web.default.svc."+suffix+"." {
				t.Fatalf("%s %s: %v", network, suffix, resp)
			}
			if c := resp.Answer[0].(*dns.CNAME); c.Hdr.Name != "Web.default.svc."+suffix+"." || c.Target != "real.default.svc."+suffix+"." {
				t.Errorf("%s %s: cname %v", network, suffix, c)
			}
			if a := resp.Answer[1].(*dns.A); a.Hdr.Name != "real.default.svc."+suffix+"." || a.A.String() != want || a.Hdr.Ttl != 30 {
				t.Errorf("%s %s: a %v, want %s with its TTL", network, suffix, a, want)
			}
		}
	}
	if hk.Load() != 2 || sz.Load() != 2 {
		t.Errorf("queries: hk %d sz %d, want 2 each", hk.Load(), sz.Load())
	}
	if m.Renamed("hk") != 2 || m.Renamed("sz") != 2 {
		t.Errorf("renamed hk %d sz %d, want 2 each", m.Renamed("hk"), m.Renamed("sz"))
	}
	// cluster.local itself is routed nowhere: the system resolvers (none) get it.
	if resp := ask(t, "udp", f, "web.default.svc.cluster.local"); resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("cluster.local with both servers renamed: %s, want SERVFAIL (no system resolver)", dns.RcodeToString[resp.Rcode])
	}
}

// cnameDNS answers NAME.cluster.local with a CNAME to real.default.svc.cluster.local
// and n A records of addr (then addr+1, ...) for it; it refuses names
// outside cluster.local, and counts queries.
func cnameDNS(t *testing.T, ip string, port uint16, addr string, n int) *atomic.Int32 {
	t.Helper()
	at := net.JoinHostPort(ip, strconv.Itoa(int(port)))
	pc, err := net.ListenPacket("udp4", at)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", at)
	if err != nil {
		t.Fatal(err)
	}
	count := new(atomic.Int32)
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		count.Add(1)
		m := new(dns.Msg).SetReply(r)
		if !dns.IsSubDomain("cluster.local.", dns.CanonicalName(r.Question[0].Name)) {
			m.Rcode = dns.RcodeRefused
			w.WriteMsg(m)
			return
		}
		cname, _ := dns.NewRR(r.Question[0].Name + " 30 IN CNAME real.default.svc.cluster.local.")
		m.Answer = append(m.Answer, cname)
		a := netip.MustParseAddr(addr)
		for range n {
			rr, _ := dns.NewRR("real.default.svc.cluster.local. 30 IN A " + a.String())
			m.Answer = append(m.Answer, rr)
			a = a.Next()
		}
		if w.RemoteAddr().Network() == "udp" {
			m.Truncate(dns.MinMsgSize)
		}
		w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go srv.ActivateAndServe()
		t.Cleanup(func() { srv.Shutdown() })
	}
	return count
}

// An answer larger than a UDP client takes: the cluster's server truncates
// it, the forwarder asks again over TCP, and the client over UDP gets TC
// (and a message that fits), then the whole answer over TCP.
func TestForwarderTruncates(t *testing.T) {
	up := freePort(t)
	cnameDNS(t, "127.0.0.2", up, "10.244.1.1", 60)
	port := freePort(t)
	m := New(Options{Link: "lo", ResolvConf: filepath.Join(t.TempDir(), "none"), Port: int(port), ForceForwarder: true, testPort: up})
	defer m.Close()
	m.Set("hk", Route{Servers: []netip.Addr{netip.MustParseAddr("127.0.0.2")}, Domains: []string{"cluster.local"}}, netip.MustParseAddr("127.0.0.1"))
	f := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	req := new(dns.Msg).SetQuestion("big.default.svc.cluster.local.", dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
	resp, _, err := c.Exchange(req, f.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Compress = true // as it came
	if !resp.Truncated || resp.Len() > dns.MinMsgSize || len(resp.Answer) >= 61 {
		t.Errorf("udp: TC %v, %d bytes, %d records; want TC and at most 512 bytes", resp.Truncated, resp.Len(), len(resp.Answer))
	}
	c.Net = "tcp"
	if resp, _, err = c.Exchange(req, f.String()); err != nil || resp.Truncated || len(resp.Answer) != 61 {
		t.Fatalf("tcp: %v, TC %v, %d records; want all 61", err, resp != nil && resp.Truncated, len(resp.Answer))
	}
}

// With systemd-resolved (here a stand-in resolvectl that records its
// arguments), the link's DNS server is the forwarder, with routing-only
// domains and no default route; the same settings again run nothing;
// Close reverts the link.
func TestResolvedMode(t *testing.T) {
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho \"$*\" >> " + calls + "\n"
	if err := os.WriteFile(filepath.Join(dir, "resolvectl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	port := freePort(t)
	m := New(Options{Link: "lo", Port: int(port)})
	if m.mode != ModeResolved {
		t.Fatalf("mode %s, want resolved when resolvectl answers", m.mode)
	}
	r := Route{Servers: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, Domains: []string{"cluster.local", "svc.example"}}
	m.Set("hk", r, netip.MustParseAddr("127.0.0.1"))
	m.Set("hk", r, netip.MustParseAddr("127.0.0.1"))
	// A second cluster renamed to sz: its routing domain joins the link's.
	m.Set("sz", Route{Servers: []netip.Addr{netip.MustParseAddr("10.96.0.11")}, Domains: []string{"sz"},
		Renames: []dnsrewrite.Rename{{Local: "sz", Cluster: "cluster.local"}}}, netip.MustParseAddr("127.0.0.1"))
	fwd := "127.0.0.1:" + strconv.Itoa(int(port))
	if st := m.Status(); st.Mode != ModeResolved || st.Listen != fwd || st.Error != "" {
		t.Errorf("status %+v", st)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(calls)
	want := "--no-pager status\ndns lo " + fwd + "\ndomain lo ~cluster.local ~svc.example\ndefault-route lo false\n" +
		"dns lo " + fwd + "\ndomain lo ~cluster.local ~svc.example ~sz\ndefault-route lo false\nrevert lo\n"
	if string(b) != want {
		t.Errorf("resolvectl calls:\n%s\nwant:\n%s", b, want)
	}
}
