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

func TestServersForLongestDomain(t *testing.T) {
	a, b := netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.96.0.11")
	f := &forwarder{}
	f.setRoutes(map[string][]netip.Addr{"cluster.local": {a}, "svc.cluster.local": {b}})
	for name, want := range map[string][]netip.Addr{
		"demo.default.svc.cluster.local.": {b},
		"Pod.Cluster.Local.":              {a},
		"cluster.local.":                  {a},
		"notcluster.local.":               nil,
		"example.org.":                    nil,
	} {
		got := f.serversFor(name)
		if len(got) != len(want) || (len(want) > 0 && got[0] != want[0]) {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
}

// With systemd-resolved (here a stand-in resolvectl that records its
// arguments), the split goes to the link: DNS servers, routing-only
// domains, no default route; the same settings again run nothing; Close
// reverts the link.
func TestResolvedMode(t *testing.T) {
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho \"$*\" >> " + calls + "\n"
	if err := os.WriteFile(filepath.Join(dir, "resolvectl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	m := New(Options{Link: "lo"})
	if m.mode != ModeResolved {
		t.Fatalf("mode %s, want resolved when resolvectl answers", m.mode)
	}
	r := Route{Servers: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, Domains: []string{"cluster.local", "svc.example"}}
	m.Set("hk", r, netip.MustParseAddr("100.64.240.2"))
	m.Set("hk", r, netip.MustParseAddr("100.64.240.2"))
	if st := m.Status(); st.Mode != ModeResolved || st.Listen != "" || st.Error != "" {
		t.Errorf("status %+v", st)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(calls)
	want := "--no-pager status\ndns lo 10.96.0.10\ndomain lo ~cluster.local ~svc.example\ndefault-route lo false\nrevert lo\n"
	if string(b) != want {
		t.Errorf("resolvectl calls:\n%s\nwant:\n%s", b, want)
	}
}
