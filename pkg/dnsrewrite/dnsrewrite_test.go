package dnsrewrite

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

func rr(t *testing.T, s string) dns.RR {
	t.Helper()
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var maps = []Mapping{
	{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("100.100.0.0/16")},
	{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("100.112.0.0/12")},
	{netip.MustParsePrefix("fd00:10:244::/56"), netip.MustParsePrefix("fd64:100:244::/56")},
}

func TestAddressesMapsRealToVirtualAndKeepsTTL(t *testing.T) {
	m := new(dns.Msg)
	m.AuthenticatedData = true
	m.Answer = []dns.RR{
		rr(t, "web.default.svc.cluster.local. 30 IN A 10.244.1.20"),
		rr(t, "web.default.svc.cluster.local. 30 IN A 192.0.2.1"),             // outside every real prefix
		rr(t, "api.default.svc.cluster.local. 5 IN A 10.111.255.7"),           // host bits across a /12
		rr(t, "web.default.svc.cluster.local. 30 IN AAAA fd00:10:244:ab::20"), // /56 keeps the low 72 bits
		rr(t, "web.default.svc.cluster.local. 30 IN RRSIG A 8 5 30 20300101000000 20200101000000 1 cluster.local. AAAA"),
	}
	m.Extra = []dns.RR{rr(t, "ns.cluster.local. 60 IN A 10.96.0.10")}
	if n := Addresses(m, maps); n != 4 {
		t.Fatalf("rewrote %d, want 4", n)
	}
	want := []string{
		"web.default.svc.cluster.local.\t30\tIN\tA\t100.100.1.20",
		"web.default.svc.cluster.local.\t30\tIN\tA\t192.0.2.1",
		"api.default.svc.cluster.local.\t5\tIN\tA\t100.127.255.7",
		"web.default.svc.cluster.local.\t30\tIN\tAAAA\tfd64:100:244:ab::20",
	}
	if len(m.Answer) != len(want) {
		t.Fatalf("answer %v: the RRSIG over a rewritten record must go", m.Answer)
	}
	for i, w := range want {
		if got := m.Answer[i].String(); got != w {
			t.Errorf("answer %d = %q, want %q", i, got, w)
		}
	}
	if got := m.Extra[0].String(); got != "ns.cluster.local.\t60\tIN\tA\t100.112.0.10" {
		t.Errorf("additional = %q", got)
	}
	if m.AuthenticatedData {
		t.Error("AD still set on a rewritten answer")
	}
}

func TestAddressesLeavesOthersAlone(t *testing.T) {
	m := new(dns.Msg)
	m.AuthenticatedData = true
	m.Answer = []dns.RR{rr(t, "www.example.com. 300 IN A 192.0.2.1"), rr(t, "www.example.com. 300 IN RRSIG A 8 3 300 20300101000000 20200101000000 1 example.com. AAAA")}
	if n := Addresses(m, maps); n != 0 || !m.AuthenticatedData || len(m.Answer) != 2 {
		t.Errorf("rewrote %d, AD %v, answer %v: an answer outside the map must stay signed as it is", n, m.AuthenticatedData, m.Answer)
	}
	if n := Addresses(m, nil); n != 0 {
		t.Errorf("no maps: rewrote %d", n)
	}
}

func TestRenameRequestAndResponse(t *testing.T) {
	r := Rename{Local: "hk", Cluster: "cluster.local"}
	req := new(dns.Msg).SetQuestion("Web.Default.svc.HK.", dns.TypeA)
	q := req.Question[0]
	if !r.Request(req) || req.Question[0].Name != "Web.Default.svc.cluster.local." {
		t.Fatalf("request renamed to %q", req.Question[0].Name)
	}
	resp := new(dns.Msg).SetReply(req)
	resp.AuthenticatedData = true
	resp.Answer = []dns.RR{
		rr(t, "Web.Default.svc.cluster.local. 30 IN CNAME web2.default.svc.cluster.local."),
		rr(t, "web2.default.svc.cluster.local. 30 IN A 10.244.1.20"),
		rr(t, "_http._tcp.web.default.svc.cluster.local. 30 IN SRV 0 100 80 web.default.svc.cluster.local."),
		rr(t, "alias.default.svc.cluster.local. 30 IN CNAME www.example.com."),
	}
	resp.Ns = []dns.RR{rr(t, "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30")}
	if n := r.Response(resp, q); n != 9 {
		t.Errorf("renamed %d names, want 9", n)
	}
	if resp.Question[0] != q {
		t.Errorf("question %v, want the client's %v", resp.Question[0], q)
	}
	want := []string{
		"Web.Default.svc.hk.\t30\tIN\tCNAME\tweb2.default.svc.hk.",
		"web2.default.svc.hk.\t30\tIN\tA\t10.244.1.20",
		"_http._tcp.web.default.svc.hk.\t30\tIN\tSRV\t0 100 80 web.default.svc.hk.",
		"alias.default.svc.hk.\t30\tIN\tCNAME\twww.example.com.", // a target outside the domain stays
	}
	for i, w := range want {
		if got := resp.Answer[i].String(); got != w {
			t.Errorf("answer %d = %q, want %q", i, got, w)
		}
	}
	if got := resp.Ns[0].String(); got != "hk.\t30\tIN\tSOA\tns.dns.hk. hostmaster.hk. 1 7200 1800 86400 30" {
		t.Errorf("authority = %q", got)
	}
	if resp.AuthenticatedData {
		t.Error("AD still set on a renamed answer")
	}
}

func TestRenameOnlyWholeLabels(t *testing.T) {
	r := Rename{Local: "hk", Cluster: "cluster.local"}
	for name, want := range map[string]string{
		"hk.":                "cluster.local.",
		"a.hk":               "a.cluster.local",
		"ahk.":               "",
		"hk.example.com.":    "",
		"web.default.svc.HK": "web.default.svc.cluster.local",
	} {
		got, ok := swapSuffix(name, r.Local, r.Cluster)
		if (want == "") == ok || (ok && got != want) {
			t.Errorf("swapSuffix(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
	req := new(dns.Msg).SetQuestion("www.example.com.", dns.TypeA)
	if r.Request(req) || req.Question[0].Name != "www.example.com." {
		t.Errorf("a name outside the suffix was renamed: %q", req.Question[0].Name)
	}
}

// A reverse lookup of a virtual address is asked as that of the real one
// and answered under the name asked; other names are not touched.
func TestReverse(t *testing.T) {
	for name, want := range map[string]string{
		"20.1.100.100.in-addr.arpa.":     "20.1.244.10.in-addr.arpa",
		"7.255.127.100.in-addr.arpa":     "7.255.111.10.in-addr.arpa", // across a /12: 100.127.255.7 is 10.111.255.7
		"20.1.244.10.in-addr.arpa.":      "",                          // a real address: no virtual prefix holds it
		"1.100.100.in-addr.arpa.":        "",                          // a zone, not one address
		"web.default.svc.cluster.local.": "",
		"x.1.100.100.in-addr.arpa.":      "",
	} {
		r, ok := Reverse(name, maps)
		if ok != (want != "") || (ok && r.Cluster != want) {
			t.Errorf("Reverse(%q) = %+v, %v; want %q", name, r, ok, want)
		}
	}
	v6, _ := dns.ReverseAddr("fd64:100:244:ab::20")
	real6, _ := dns.ReverseAddr("fd00:10:244:ab::20")
	if r, ok := Reverse(v6, maps); !ok || r.Cluster+"." != real6 {
		t.Errorf("Reverse(%q) = %+v, %v; want %q", v6, r, ok, real6)
	}
	r, _ := Reverse("20.1.100.100.in-addr.arpa.", maps)
	req := new(dns.Msg).SetQuestion("20.1.100.100.in-addr.arpa.", dns.TypePTR)
	q := req.Question[0]
	if !r.Request(req) || req.Question[0].Name != "20.1.244.10.in-addr.arpa." {
		t.Fatalf("asked %q", req.Question[0].Name)
	}
	resp := new(dns.Msg).SetReply(req)
	resp.Answer = []dns.RR{rr(t, "20.1.244.10.in-addr.arpa. 30 IN PTR web.default.svc.cluster.local.")}
	r.Response(resp, q)
	if got := resp.Answer[0].String(); got != "20.1.100.100.in-addr.arpa.\t30\tIN\tPTR\tweb.default.svc.cluster.local." || resp.Question[0] != q {
		t.Errorf("answer %q, question %v", got, resp.Question[0])
	}
}
