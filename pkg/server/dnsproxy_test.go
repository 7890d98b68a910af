package server

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/gtun/gtun/pkg/dnsproxy"
	"github.com/gtun/gtun/pkg/dnsrewrite"
)

// kubeDNS answers every A question with 10.96.5.5 and a signed-looking
// record set (AD set), on a free port of 127.0.0.2.
func kubeDNS(t testing.TB) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		m.AuthenticatedData = true
		rr := r.Question[0].Name + " 17 IN A 10.96.5.5"
		if r.Question[0].Qtype == dns.TypePTR {
			if r.Question[0].Name != "5.5.96.10.in-addr.arpa." {
				m.Rcode = dns.RcodeNameError
				w.WriteMsg(m)
				return
			}
			rr = r.Question[0].Name + " 17 IN PTR web.default.svc.cluster.local."
		}
		a, _ := dns.NewRR(rr)
		m.Answer = append(m.Answer, a)
		w.WriteMsg(m)
	})
	srv, err := dnsproxy.Listen(netip.MustParseAddrPort("127.0.0.2:0"), h, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv.Addr.String()
}

// The proxy asks the cluster's DNS and answers with the virtual address,
// TTL kept and AD cleared, over UDP and TCP; a source outside the pool
// gets no answer at all.
func TestDNSProxyAnswersFollowTheMap(t *testing.T) {
	up := kubeDNS(t)
	p := &dnsProxy{pool: netip.MustParsePrefix("127.0.0.0/8"), log: testLog(), busy: dnsproxy.NewSlots()}
	p.conf.Store(&dnsProxyConf{upstreams: []string{up},
		maps: []dnsrewrite.Mapping{{Real: netip.MustParsePrefix("10.96.0.0/16"), Virtual: netip.MustParsePrefix("100.110.0.0/16")}}})
	srv, err := dnsproxy.Listen(netip.MustParseAddrPort("127.0.0.1:0"), dns.HandlerFunc(p.serve), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, network := range []string{"udp", "tcp"} {
		at := srv.Addr.String()
		c := &dns.Client{Net: network, Timeout: 3 * time.Second}
		resp, _, err := c.Exchange(new(dns.Msg).SetQuestion("web.default.svc.cluster.local.", dns.TypeA), at)
		if err != nil {
			t.Fatalf("%s: %v", network, err)
		}
		if len(resp.Answer) != 1 || resp.Answer[0].(*dns.A).A.String() != "100.110.5.5" || resp.Answer[0].Header().Ttl != 17 || resp.AuthenticatedData {
			t.Errorf("%s: %v", network, resp)
		}
	}
	if p.rewritten.Load() != 2 || p.records.Load() != 2 || p.queries.Get("answered") != 2 {
		t.Errorf("counted rewritten %d, records %d, answered %d; want 2 each", p.rewritten.Load(), p.records.Load(), p.queries.Get("answered"))
	}
	// The reverse lookup of the virtual address is asked for the real one
	// and answered under the name asked.
	c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
	resp, _, err := c.Exchange(new(dns.Msg).SetQuestion("5.5.110.100.in-addr.arpa.", dns.TypePTR), srv.Addr.String())
	if err != nil || len(resp.Answer) != 1 || resp.Answer[0].String() != "5.5.110.100.in-addr.arpa.\t17\tIN\tPTR\tweb.default.svc.cluster.local." ||
		resp.Question[0].Name != "5.5.110.100.in-addr.arpa." || p.reversed.Load() != 1 {
		t.Errorf("reverse lookup of the virtual address: %v %v (reversed %d)", err, resp, p.reversed.Load())
	}

	// Every query gives its slot back, though after its answer is on its
	// way: the client can have it before the handler has returned.
	for deadline := time.Now().Add(5 * time.Second); len(p.busy) != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d slots still taken after every query was answered", len(p.busy))
		}
	}
	// With every slot taken (queries in flight upstream), a query gets
	// SERVFAIL at once, counted busy; a slot given back serves again.
	for range dnsproxy.MaxInFlight {
		if !p.busy.Take() {
			t.Fatal("a slot missing")
		}
	}
	q := new(dns.Msg).SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	if resp, _, err := c.Exchange(q, srv.Addr.String()); err != nil || resp.Rcode != dns.RcodeServerFailure || p.queries.Get("busy") != 1 {
		t.Errorf("all slots taken: %v %v, busy %d; want SERVFAIL, busy 1", err, resp, p.queries.Get("busy"))
	}
	p.busy.Give()
	if resp, _, err := c.Exchange(q, srv.Addr.String()); err != nil || len(resp.Answer) != 1 {
		t.Errorf("a slot free again: %v %v", err, resp)
	}

	// A proxy whose pool the asking address is not in.
	strict := &dnsProxy{pool: netip.MustParsePrefix("100.64.240.0/24"), log: testLog(), busy: dnsproxy.NewSlots()}
	strict.conf.Store(p.conf.Load())
	ssrv, err := dnsproxy.Listen(netip.MustParseAddrPort("127.0.0.1:0"), dns.HandlerFunc(strict.serve), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ssrv.Close()
	c = &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	if resp, _, err := c.Exchange(new(dns.Msg).SetQuestion("web.default.svc.cluster.local.", dns.TypeA), ssrv.Addr.String()); err == nil {
		t.Errorf("a source outside the pool was answered: %v", resp)
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Errorf("a source outside the pool: %v, want silence", err)
	}
	if strict.queries.Get("refused") != 1 {
		t.Errorf("refused %d, want 1", strict.queries.Get("refused"))
	}
}

// What the proxy adds to a query over loopback UDP: b.N queries asked of
// the cluster's DNS directly (direct) and through the proxy with the
// rewrite (proxy).
func BenchmarkDNSProxy(b *testing.B) {
	up := kubeDNS(b)
	p := &dnsProxy{pool: netip.MustParsePrefix("127.0.0.0/8"), log: testLog(), busy: dnsproxy.NewSlots()}
	p.conf.Store(&dnsProxyConf{upstreams: []string{up},
		maps: []dnsrewrite.Mapping{{Real: netip.MustParsePrefix("10.96.0.0/16"), Virtual: netip.MustParsePrefix("100.110.0.0/16")}}})
	srv, err := dnsproxy.Listen(netip.MustParseAddrPort("127.0.0.1:0"), dns.HandlerFunc(p.serve), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	q := new(dns.Msg).SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	for name, at := range map[string]string{"direct": up, "proxy": srv.Addr.String()} {
		b.Run(name, func(b *testing.B) {
			c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
			for b.Loop() {
				if _, _, err := c.Exchange(q, at); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
