package dnsname

import (
	"net/netip"
	"testing"
)

func TestNormalizeValid(t *testing.T) {
	if got := Normalize(" Cluster.LOCAL. "); got != "cluster.local" {
		t.Errorf("Normalize = %q", got)
	}
	for n, want := range map[string]bool{
		"cluster.local": true, "_tcp.svc.cluster.local": true, "a-b.c": true, "com": true,
		"": false, "a..b": false, "-a.b": false, "a-.b": false, "a b": false, "ä.b": false, "a/26.b": false,
		string(make([]byte, 254)): false,
	} {
		if Valid(n) != want {
			t.Errorf("Valid(%q) = %v", n, !want)
		}
	}
}

func TestReverseZone(t *testing.T) {
	for n, want := range map[string]string{
		"244.10.in-addr.arpa":      "10.244.0.0/16",
		"10.in-addr.arpa":          "10.0.0.0/8",
		"20.1.244.10.in-addr.arpa": "10.244.1.20/32",
		"8.b.d.0.1.0.0.2.ip6.arpa": "2001:db8::/32",
		"d.f.ip6.arpa":             "fd00::/8",
	} {
		if p, ok := ReverseZone(n); !ok || p.String() != want {
			t.Errorf("ReverseZone(%q) = %v %v, want %s", n, p, ok, want)
		}
	}
	for _, n := range []string{"in-addr.arpa", "ip6.arpa", "1.2.3.4.5.in-addr.arpa", "010.in-addr.arpa", "256.in-addr.arpa",
		"0/26.1.168.192.in-addr.arpa", "x.in-addr.arpa", "ab.ip6.arpa", "g.ip6.arpa", "cluster.local", "arpa"} {
		if p, ok := ReverseZone(n); ok {
			t.Errorf("ReverseZone(%q) = %v, want not a zone", n, p)
		}
	}
}

// The default takes names under local and home.arpa and the reverse zones
// of the server's routes, nothing that could be a public name; a
// configured list takes exactly what it names.
func TestPolicy(t *testing.T) {
	routes := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")}
	def := Policy{Routes: routes}
	listed := Policy{Accept: []string{"corp.example", "cluster-b.internal"}, Routes: routes}
	none := Policy{Accept: []string{}, Routes: routes}
	for _, c := range []struct {
		p      Policy
		domain string
		ok     bool
	}{
		{def, "cluster.local", true},
		{def, "svc.cluster.local", true},
		{def, "k8s.local", true},
		{def, "lab.home.arpa", true},
		{def, "244.10.in-addr.arpa", true},
		{def, "1.244.10.in-addr.arpa", true},
		{def, "96.10.in-addr.arpa", true},   // inside 10.96.0.0/12
		{def, "local", false},               // every mDNS name
		{def, "home.arpa", false},           // the whole suffix
		{def, "com", false},                 // public
		{def, "example.com", false},         // public
		{def, "internal", false},            // clouds' own names
		{def, "google.internal", false},     // metadata.google.internal
		{def, "10.in-addr.arpa", false},     // wider than the routes
		{def, "112.10.in-addr.arpa", false}, // next to 10.96.0.0/12
		{def, "in-addr.arpa", false},
		{def, "arpa", false},
		{def, "cluster..local", false},
		{listed, "corp.example", true},
		{listed, "db.corp.example", true},
		{listed, "cluster-b.internal", true},
		{listed, "example", false},
		{listed, "cluster.local", false}, // a list replaces the default
		{listed, "244.10.in-addr.arpa", false},
		{none, "cluster.local", false},
	} {
		err := c.p.Check(c.domain)
		if (err == nil) != c.ok {
			t.Errorf("%+v Check(%q) = %v, want accepted %v", c.p.Accept, c.domain, err, c.ok)
		}
	}
}

func TestReverseZoneName(t *testing.T) {
	for p, want := range map[string]string{
		"10.244.0.0/16":    "244.10.in-addr.arpa",
		"100.100.1.0/24":   "1.100.100.in-addr.arpa",
		"10.0.0.0/8":       "10.in-addr.arpa",
		"2001:db8::/32":    "8.b.d.0.1.0.0.2.ip6.arpa",
		"fd00:10:244::/56": "0.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa",
		"10.96.0.0/12":     "",
		"2001:db8::/30":    "",
	} {
		got, ok := ReverseZoneName(netip.MustParsePrefix(p))
		if ok != (want != "") || got != want {
			t.Errorf("ReverseZoneName(%s) = %q, %v; want %q", p, got, ok, want)
		}
		if ok {
			if back, ok := ReverseZone(got); !ok || back != netip.MustParsePrefix(p) {
				t.Errorf("ReverseZone(%q) = %v, %v; want %s", got, back, ok, p)
			}
		}
	}
}
