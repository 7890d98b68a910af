package client

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/stats"
)

// The tests of gtun's data plane (dataplane.go) run in memory (see
// harness_test.go): a frame the host routes into gtun's TUN reaches the
// server whose routes cover its destination, or is dropped with a reason;
// a frame a server sends comes out of the TUN or is dropped, counted for
// gtun and that server.

// Two servers of the tests, each with a pool of its own: c1 serves the
// pods and services of one cluster, c2 a /24 of those pods (a longer
// prefix) and a network of its own.
func twoServers(t testing.TB) (*memServer, *memServer) {
	c1 := newMemServer(t, "c1", "203.0.113.1:9623", pushed("100.64.240.2/24", "100.64.240.1", "10.244.0.0/16", "10.96.0.0/12"))
	c2 := newMemServer(t, "c2", "203.0.113.2:9623", pushed("100.64.241.5/24", "100.64.241.1", "10.244.7.0/24", "192.168.0.0/16"))
	return c1, c2
}

// tso is an offloaded TCP super-packet from src to dst (3,000 bytes of
// payload, segments of 1,360), as a TUN device with TSO hands it over.
func tso(src, dst string) []byte {
	f := frame(src, dst)
	f = append(f[:packet.VnetHdrLen+20], make([]byte, 20+3000)...)
	ip := f[packet.VnetHdrLen:]
	ip[9] = 6
	ip[2], ip[3] = byte((len(ip))>>8), byte(len(ip))
	ip[20+12] = 0x50
	packet.VnetHdr{Flags: packet.VnetNeedsCsum, GSOType: packet.GSOTCPv4, HdrLen: 40, GSOSize: 1360, CsumStart: 20, CsumOffset: 16}.Encode(f)
	return f
}

// Packets cross both ways: the host's to a pod reach the server as they
// were sent, offloaded super-packets included; the server's to this
// client's address come out of the TUN.
func TestBothWays(t *testing.T) {
	c1, _ := twoServers(t)
	m := newMemClient(t, false, c1)
	if mtu, addrs := m.dev.Config(); mtu != 1400 || len(addrs) != 1 || addrs[0] != netip.MustParsePrefix("100.64.240.2/24") {
		t.Fatalf("TUN set to mtu %d, addresses %v", mtu, addrs)
	}
	for _, f := range [][]byte{frame("100.64.240.2", "10.244.1.20"), tso("100.64.240.2", "10.96.0.10")} {
		m.dev.Inject(f)
		if got := c1.next(); !bytes.Equal(got, f) {
			t.Fatalf("server got % x\nwant % x", got, f)
		}
	}
	for _, f := range [][]byte{frame("10.244.1.20", "100.64.240.2"), tso("10.96.0.10", "100.64.240.2")} {
		c1.send(f)
		if got := m.out(); !bytes.Equal(got, f) {
			t.Fatalf("TUN got % x\nwant % x", got, f)
		}
	}
	if st := m.c.Status(); len(st.Drops) != 0 || st.Servers[0].RxPackets != 2 {
		t.Errorf("status: drops %v, server %+v", st.Drops, st.Servers[0])
	}
}

// Each packet goes to the server whose routes hold its destination's
// longest prefix (and a server's own tunnel address to that server); one
// no server's routes cover is dropped: no_route.
func TestLongestPrefixPicksTheServer(t *testing.T) {
	c1, c2 := twoServers(t)
	m := newMemClient(t, false, c1, c2)
	if _, addrs := m.dev.Config(); len(addrs) != 2 {
		t.Fatalf("TUN addresses %v, want one from each server", addrs)
	}
	for _, tc := range []struct {
		dst  string
		want *memServer
	}{
		{"10.244.1.20", c1}, {"10.244.7.20", c2}, {"10.244.8.20", c1}, {"10.96.0.10", c1}, {"192.168.3.4", c2},
		{"100.64.240.1", c1}, {"100.64.241.1", c2},
		{"10.0.0.3", nil}, {"203.0.113.1", nil}, {"100.64.240.7", nil},
	} {
		t.Run(tc.dst, func(t *testing.T) {
			before := m.c.drops.Get(DropNoRoute)
			f := frame("100.64.240.2", tc.dst)
			m.dev.Inject(f)
			if tc.want == nil {
				m.waitDrops(DropNoRoute, before+1)
			} else if got := tc.want.next(); !bytes.Equal(got, f) {
				t.Fatalf("got % x", got)
			}
			c1.quiet()
			c2.quiet()
		})
	}
}

// A prefix two servers push belongs to the first that claimed it: the
// other's status shows the conflict, and packets to it stay with the
// owner even while the owner reconnects (no_session), never moving to the
// other server.
func TestOverlappingRoutesStayWithTheirOwner(t *testing.T) {
	c1, c2 := twoServers(t)
	c2.cfg.Routes = append(c2.cfg.Routes, "10.96.0.0/12")
	c2.gate = make(chan struct{}) // c2 answers once c1 is connected
	m := newMemClient(t, false, c1, c2)
	close(c2.gate)
	m.waitState("c2", "connected")
	var note string
	for _, s := range m.c.Status().Servers {
		for _, r := range s.Routes {
			if s.Name == "c2" && r.Prefix == "10.96.0.0/12" {
				note = r.Note
			}
		}
	}
	if !strings.Contains(note, `server "c1" has it`) {
		t.Errorf("c2's 10.96.0.0/12 note %q, want the conflict with c1", note)
	}
	f := frame("100.64.240.2", "10.96.0.10")
	m.dev.Inject(f)
	if got := c1.next(); !bytes.Equal(got, f) {
		t.Fatalf("got % x", got)
	}
	c1.stop()
	m.waitState("c1", "reconnecting")
	before := m.c.drops.Get(DropNoSession)
	m.dev.Inject(f)
	m.waitDrops(DropNoSession, before+1)
	c2.quiet()
	c1.start()
	m.waitState("c1", "connected")
	m.dev.Inject(f)
	if got := c1.next(); !bytes.Equal(got, f) {
		t.Fatalf("after the reconnect: got % x", got)
	}
	if n := m.c.Status().Servers[0].Reconnects; n != 1 {
		t.Errorf("%d reconnects, want 1", n)
	}
}

// fromServerCase is a frame a server sends and what gtun does with it: ""
// lets it through.
type fromServerCase struct {
	name   string
	server string
	frame  []byte
	want   string
}

// runFromServer sends each case's frame from its server, then a marker
// that passes: the frame came out of the TUN before the marker, or was
// dropped and counted with its reason for gtun and for that server.
func runFromServer(t *testing.T, m *memClient, cases []fromServerCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var s *memServer
			for _, srv := range m.servers {
				if srv.name == c.server {
					s = srv
				}
			}
			up := m.upstream(c.server)
			before, upBefore := m.c.drops.Snapshot(), up.drops.Snapshot()
			s.send(c.frame)
			if c.want == "" {
				if got := m.out(); !bytes.Equal(got, c.frame) {
					t.Fatalf("TUN got % x, want the frame", got)
				}
			}
			m.sync(s)
			after, upAfter := m.c.drops.Snapshot(), up.drops.Snapshot()
			for _, d := range []struct {
				whose         string
				before, after map[string]uint64
			}{{"gtun", before, after}, {"the server", upBefore, upAfter}} {
				for r := range numDropReasons {
					want := d.before[r.String()]
					if r.String() == c.want {
						want++
					}
					if got := d.after[r.String()]; got != want {
						t.Errorf("%s's %s drops %d, want %d", d.whose, r, got, want)
					}
				}
			}
		})
	}
}

// icmpError is an ICMP fragmentation-needed error from router to this
// client's me, quoting a packet from me to quotedDst.
func icmpError(router, me, quotedDst string) []byte {
	f := frame(router, me)
	f[packet.VnetHdrLen+9] = 1
	quote := frame(me, quotedDst)[packet.VnetHdrLen:]
	return append(append(f[:packet.VnetHdrLen+20], 3, 4, 0, 0, 0, 0, 0x05, 0x78), quote...)
}

// A server is trusted for what its routes cover: its packets must be
// addressed to this client's address from it and come from a source this
// client routes to it, or from its own tunnel address; an ICMP error is
// judged by the packet it quotes. Anything else is dropped and counted,
// and the session lives.
func TestServerTrustedForItsRoutes(t *testing.T) {
	c1, c2 := twoServers(t)
	m := newMemClient(t, false, c1, c2)
	const me1, me2 = "100.64.240.2", "100.64.241.5"
	runFromServer(t, m, []fromServerCase{
		{"a pod of c1", "c1", frame("10.244.1.20", me1), ""},
		{"a service of c1", "c1", frame("10.96.0.10", me1), ""},
		{"c1's own address", "c1", frame("100.64.240.1", me1), ""},
		{"c2's longer pod prefix", "c2", frame("10.244.7.20", me2), ""},
		{"c1 from c2's pods inside its own /16", "c1", frame("10.244.7.20", me1), "spoofed_source"},
		{"c2 from c1's pods", "c2", frame("10.244.1.20", me2), "spoofed_source"},
		{"c1 from c2's own address", "c1", frame("100.64.241.1", me1), "spoofed_source"},
		{"a public source", "c1", frame("203.0.113.5", me1), "spoofed_source"},
		{"the cluster's VPC, outside the routes", "c1", frame("10.0.0.3", me1), "spoofed_source"},
		{"another pool address", "c1", frame("100.64.240.7", me1), "spoofed_source"},
		{"to c2's address of this client", "c1", frame("10.244.1.20", me2), "wrong_destination"},
		{"to another client", "c1", frame("10.244.1.20", "100.64.240.9"), "wrong_destination"},
		{"to a subnet, gateway mode off", "c1", frame("10.244.1.20", "172.16.0.5"), "wrong_destination"},
		{"fragmentation needed from c1's VPC router", "c1", icmpError("10.0.0.1", me1, "10.244.1.20"), ""},
		{"fragmentation needed about c2's route", "c1", icmpError("10.0.0.1", me1, "192.168.3.4"), "spoofed_source"},
		{"fragmentation needed about a public address", "c1", icmpError("10.0.0.1", me1, "203.0.113.5"), "spoofed_source"},
		{"offloaded super-packet", "c1", tso("10.244.1.20", me1), ""},
		{"offload header beyond its packet", "c1", func() []byte {
			f := frame("10.244.1.20", me1)
			packet.VnetHdr{Flags: packet.VnetNeedsCsum, CsumStart: 20, CsumOffset: 200}.Encode(f)
			return f
		}(), "bad_offload"},
		{"short frame", "c1", make([]byte, packet.VnetHdrLen), "malformed"},
		{"not IP", "c2", append(make([]byte, packet.VnetHdrLen), 0x10, 0, 0), "malformed"},
	})
	for _, s := range m.c.Status().Servers {
		if s.State != "connected" || s.Reconnects != 0 {
			t.Errorf("%s: %s after %d reconnects: a dropped packet ended a session", s.Name, s.State, s.Reconnects)
		}
	}
}

// Site-to-site: in gateway mode the subnets a server routes to this client
// are destinations it accepts from that server (the VPC's hosts behind
// it); without gateway mode they are not, and such packets are dropped.
func TestSubnetsOnlyInGatewayMode(t *testing.T) {
	for _, gateway := range []bool{true, false} {
		t.Run(fmt.Sprintf("gateway=%v", gateway), func(t *testing.T) {
			c1, c2 := twoServers(t)
			c1.cfg.Subnets = []string{"172.16.0.0/24"}
			m := newMemClient(t, gateway, c1, c2)
			want := "wrong_destination"
			if gateway {
				want = ""
			}
			runFromServer(t, m, []fromServerCase{
				{"a pod to a host of this VPC", "c1", frame("10.244.1.20", "172.16.0.5"), want},
				{"from a forged source", "c1", frame("198.51.100.9", "172.16.0.5"), map[bool]string{true: "spoofed_source", false: "wrong_destination"}[gateway]},
				{"the other server to those hosts", "c2", frame("10.244.7.20", "172.16.0.5"), "wrong_destination"},
				{"beside the subnet", "c1", frame("10.244.1.20", "172.16.1.5"), "wrong_destination"},
			})
			if got := m.c.Status().Servers[0].Subnets; gateway != (len(got) == 1) {
				t.Errorf("status subnets %v", got)
			}
		})
	}
}

// A server that stops reading costs only its own packets: once its socket
// buffers and the send queue are full, gtun drops what the host sends to
// it (queue_full) and keeps delivering to the other server at once; the
// TUN reader never waits on it.
func TestStalledServerDoesNotBlockOthers(t *testing.T) {
	c1, c2 := twoServers(t)
	c1.hold = make(chan struct{})
	defer close(c1.hold)
	m := newMemClient(t, false, c1, c2)
	big := frame("100.64.240.2", "10.244.1.20")
	big = append(big, make([]byte, 16000)...)
	toC2 := frame("100.64.241.5", "192.168.3.4")
	const flood = 2000 // 32 MB: beyond the socket buffers and the queue
	start := time.Now()
	for i := range flood {
		m.dev.Inject(big)
		if i%100 == 0 {
			m.dev.Inject(toC2)
			sent := time.Now()
			if got := c2.next(); !bytes.Equal(got, toC2) {
				t.Fatalf("c2 got % x", got)
			}
			if d := time.Since(sent); d > time.Second {
				t.Fatalf("c2's packet took %v behind the stalled server's flood", d)
			}
		}
	}
	m.waitDrops(DropQueueFull, 1)
	st := m.c.Status()
	t.Logf("%d frames of %d bytes to a server that reads nothing: %d dropped (queue_full) in %v",
		flood, len(big), st.Drops["queue_full"], time.Since(start).Round(time.Millisecond))
	if st.Servers[0].QueueDrops == 0 || st.Servers[1].QueueDrops != 0 {
		t.Errorf("queue drops: c1 %d, c2 %d; want c1's alone", st.Servers[0].QueueDrops, st.Servers[1].QueueDrops)
	}
}

// Every drop reason is counted (for gtun, and for the server when a
// server sent the packet) and shows in status and metrics under its name.
func TestEveryDropReasonCounted(t *testing.T) {
	c1, c2 := twoServers(t)
	c1.hold = make(chan struct{})
	defer close(c1.hold)
	m := newMemClient(t, false, c1, c2)
	const me = "100.64.241.5"
	for _, f := range [][]byte{
		make([]byte, packet.VnetHdrLen+1),                                        // malformed
		func() []byte { f := frame("10.244.7.20", me); f[0] = 0x81; return f }(), // bad_offload
		frame("10.244.7.20", "100.64.241.9"),                                     // wrong_destination
		frame("10.244.1.20", me),                                                 // spoofed_source
	} {
		c2.send(f)
	}
	m.sync(c2)
	m.dev.FailWrites(errors.New("tun write: input/output error"))
	c2.send(frame("10.244.7.20", me)) // tun_write
	up := m.upstream("c2")
	deadline := time.Now().Add(wait)
	for up.drops.Get(DropTunWrite) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no tun_write drop")
		}
		time.Sleep(time.Millisecond)
	}
	m.dev.FailWrites(nil)
	m.dev.InjectIP([]byte{0x10})        // malformed, from the TUN
	m.dev.Inject(frame(me, "10.0.0.3")) // no_route
	big := append(frame("100.64.240.2", "10.244.1.20"), make([]byte, 16000)...)
	for m.c.drops.Get(DropQueueFull) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("c1's queue never filled")
		}
		m.dev.Inject(big) // queue_full
	}
	c2.stop()
	m.waitState("c2", "reconnecting")
	m.dev.Inject(frame(me, "192.168.3.4")) // no_session
	m.waitDrops(DropNoSession, 1)
	m.waitDrops(DropMalformed, 2)
	m.waitDrops(DropNoRoute, 1)

	st := m.c.Status()
	for r := range numDropReasons {
		if r == DropSendError {
			// A refusal of the udp transport's datagram path, which this
			// in-memory harness has not: TestSendDrop names it, session's
			// TestDatagramsRefusedIsNotQueueFull makes one.
			continue
		}
		if st.Drops[r.String()] == 0 {
			t.Errorf("%s not counted for gtun: %v", r, st.Drops)
		}
	}
	want := map[string]uint64{"malformed": 1, "bad_offload": 1, "wrong_destination": 1, "spoofed_source": 1, "tun_write": 1}
	if fmt.Sprint(st.Servers[1].Drops) != fmt.Sprint(want) || len(st.Servers[0].Drops) != 0 {
		t.Errorf("c1's drops %v, c2's %v; want c2's %v", st.Servers[0].Drops, st.Servers[1].Drops, want)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(func() Status { return st }))
	var metrics strings.Builder
	for r := range numDropReasons {
		fmt.Fprintf(&metrics, "gtun_drops_total{reason=%q} %d\n", r.String(), st.Drops[r.String()])
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader("# HELP gtun_drops_total Packets gtun dropped, by reason (no_session while reconnecting, queue_full, ...).\n# TYPE gtun_drops_total counter\n"+metrics.String()), "gtun_drops_total"); err != nil {
		t.Error(err)
	}
}

// The data plane allocates nothing per packet: a frame let through to the
// TUN, a frame dropped (its log line held back), a destination looked up.
func TestDataPlaneAllocs(t *testing.T) {
	c1, c2 := twoServers(t)
	m := newMemClient(t, false, c1, c2)
	m.dev.Discard()
	up := m.upstream("c1")
	pass, drop := frame("10.244.1.20", "100.64.240.2"), frame("203.0.113.5", "100.64.240.2")
	icmp := icmpError("10.0.0.1", "100.64.240.2", "10.244.1.20")
	m.c.fromServer(up, drop) // its line logged: the next ones are held back
	for name, f := range map[string]func(){
		"pass":        func() { m.c.fromServer(up, pass) },
		"icmp error":  func() { m.c.fromServer(up, icmp) },
		"drop":        func() { m.c.fromServer(up, drop) },
		"route":       func() { m.c.byDst.Load().Lookup(addr("10.244.7.20")) },
		"count drops": func() { m.c.drops.Inc(DropNoRoute) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocations per packet", name, n)
		}
	}
}

// The drop reasons fit the fixed counters, and each has its own name.
func TestDropReasonNames(t *testing.T) {
	if numDropReasons > stats.MaxReasons {
		t.Fatalf("%d drop reasons, counters for %d", numDropReasons, stats.MaxReasons)
	}
	seen := map[string]bool{}
	for r := range numDropReasons {
		if n := r.String(); n == "" || seen[n] {
			t.Errorf("reason %d named %q", r, n)
		}
		seen[r.String()] = true
	}
	for _, r := range []DropReason{DropMalformed, DropBadOffload, DropWrongDestination, DropSpoofed, DropTunWrite} {
		if dropLines[r] == "" {
			t.Errorf("no log line for %s", r)
		}
	}
}

func BenchmarkFromServer(b *testing.B) {
	c1, c2 := twoServers(b)
	m := newMemClient(b, false, c1, c2)
	m.dev.Discard()
	up := m.upstream("c1")
	pass, drop := frame("10.244.1.20", "100.64.240.2"), frame("203.0.113.5", "100.64.240.2")
	b.Run("pass", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.c.fromServer(up, pass)
		}
	})
	b.Run("drop", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.c.fromServer(up, drop)
		}
	})
}
