package packet

import (
	"net/netip"
	"testing"
)

func ipv4(src, dst string) []byte {
	p := make([]byte, 20)
	p[0] = 0x45
	p[3] = 20
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	return p
}

func TestAddrs(t *testing.T) {
	s, d, err := Addrs(ipv4("100.64.240.2", "10.244.1.20"))
	if err != nil || s.String() != "100.64.240.2" || d.String() != "10.244.1.20" {
		t.Fatal(s, d, err)
	}
	for _, bad := range [][]byte{nil, {0x45}, {0x60, 0}, {0x10, 1, 2}, make([]byte, 20)} {
		if _, _, err := Addrs(bad); err == nil {
			t.Errorf("%x accepted", bad)
		}
	}
	v6 := make([]byte, 40)
	v6[0] = 0x60
	v6[39] = 1
	if _, d, err := Addrs(v6); err != nil || d.String() != "::1" {
		t.Fatal(d, err)
	}
}

func TestTableLongestPrefix(t *testing.T) {
	tb := NewTable(map[netip.Prefix]string{
		netip.MustParsePrefix("10.0.0.0/8"):      "a",
		netip.MustParsePrefix("10.244.0.0/16"):   "b",
		netip.MustParsePrefix("10.244.1.20/32"):  "c",
		netip.MustParsePrefix("0.0.0.0/0"):       "default",
		netip.MustParsePrefix("fd00::/8"):        "v6",
		netip.MustParsePrefix("100.64.240.0/24"): "pool",
	})
	cases := map[string]string{
		"10.244.1.20": "c", "10.244.1.21": "b", "10.1.1.1": "a", "8.8.8.8": "default",
		"fd00::1": "v6", "100.64.240.9": "pool",
	}
	for a, want := range cases {
		if got, ok := tb.Lookup(netip.MustParseAddr(a)); !ok || got != want {
			t.Errorf("%s: got %q %v want %q", a, got, ok, want)
		}
	}
	if _, ok := tb.Lookup(netip.MustParseAddr("2001:db8::1")); ok {
		t.Error("v6 address matched a v4 default")
	}
	var empty *Table[int]
	if _, ok := empty.Lookup(netip.MustParseAddr("1.1.1.1")); ok {
		t.Error("nil table matched")
	}
}

func BenchmarkLookup(b *testing.B) {
	m := map[netip.Prefix]int{}
	for i := 0; i < 250; i++ {
		m[netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 240, byte(i)}), 32)] = i
	}
	m[netip.MustParsePrefix("172.16.0.0/24")] = 1000
	tb := NewTable(m)
	pkt := ipv4("10.244.1.20", "100.64.240.77")
	b.ReportAllocs()
	for b.Loop() {
		d, _ := Dst(pkt)
		if _, ok := tb.Lookup(d); !ok {
			b.Fatal("miss")
		}
	}
}
