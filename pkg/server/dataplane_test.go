package server

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/stats"
)

// The tests of gtund's data plane (dataplane.go) run in memory (see
// harness_test.go): a frame a client's session sends comes out of gtund's
// TUN device or is dropped with a reason, counted for gtund and the peer;
// a frame the host routes into the TUN reaches the session of the peer
// that owns its destination.

var (
	ping  = []byte{8, 0, 0, 0, 0, 1, 0, 1}                                // ICMP echo request
	pong  = []byte{0, 0, 0, 0, 0, 1, 0, 1}                                // ICMP echo reply
	unrch = []byte{3, 4, 0, 0, 0, 0, 0x05, 0x78}                          // ICMP fragmentation needed, MTU 1400
	syn22 = []byte{0x9c, 0x40, 0, 22, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02} // TCP SYN to port 22
	udp53 = []byte{0x9c, 0x40, 0, 53, 0, 8, 0, 0}
)

const gw = "100.64.240.1" // gtund's own tunnel address

// tso is an offloaded TCP super-packet from src to dst (3,000 bytes of
// payload, segments of 1,360), as a TUN device with TSO hands it over.
func tso(src, dst string) []byte {
	f := frame(src, dst, 6, make([]byte, 20+3000)...)
	f[packet.VnetHdrLen+20+12] = 0x50
	packet.VnetHdr{Flags: packet.VnetNeedsCsum, GSOType: packet.GSOTCPv4, HdrLen: 40, GSOSize: 1360, CsumStart: 20, CsumOffset: 16}.Encode(f)
	return f
}

// Packets cross both ways: a client's to a pod come out of the TUN as they
// were sent, offloaded super-packets included; the host's to the client's
// tunnel address reach its session.
func TestBothWays(t *testing.T) {
	m := newMemServer(t, testConfig(t, config.Peer{Name: "vm"}))
	vm := m.connect("vm")
	if vm.addr != netip.MustParseAddr("100.64.240.2") || vm.cfg.Gateway != gw {
		t.Fatalf("vm got address %s and gateway %s", vm.addr, vm.cfg.Gateway)
	}
	for _, f := range [][]byte{frame(vm.addr.String(), "10.244.1.20", 6, syn22...), tso(vm.addr.String(), "10.96.0.10")} {
		vm.send(f)
		if got := m.out(); !bytes.Equal(got, f) {
			t.Fatalf("TUN got % x\nwant % x", got, f)
		}
	}
	for _, f := range [][]byte{frame("10.244.1.20", vm.addr.String(), 6, syn22...), tso("10.96.0.10", vm.addr.String())} {
		m.dev.Inject(f)
		if got := vm.next(); !bytes.Equal(got, f) {
			t.Fatalf("client got % x\nwant % x", got, f)
		}
	}
	if st := m.s.Status(); len(st.Drops) != 0 || !st.Peers[0].Connected || st.Peers[0].RxPackets != 2 {
		t.Errorf("status: drops %v, peer %+v", st.Drops, st.Peers[0])
	}
}

// fromPeerCase is a frame a peer sends and what gtund does with it: ""
// lets it through.
type fromPeerCase struct {
	name  string
	peer  string
	frame func(me string) []byte
	want  string
}

// runFromPeer sends each case's frame from its peer's session, then a
// marker that passes: the frame came out of the TUN before the marker, or
// was dropped and counted with its reason for gtund and the peer.
func runFromPeer(t *testing.T, m *memServer, clients map[string]*memClient, cases []fromPeerCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl := clients[c.peer]
			ps := m.s.route(cl.addr)
			before, peerBefore := m.s.drops.Snapshot(), ps.peer.drops.Snapshot()
			f := c.frame(cl.addr.String())
			cl.send(f)
			if c.want == "" {
				if got := m.out(); !bytes.Equal(got, f) {
					t.Fatalf("TUN got % x, want the frame", got)
				}
			}
			m.sync(cl)
			after, peerAfter := m.s.drops.Snapshot(), ps.peer.drops.Snapshot()
			for _, d := range []struct {
				whose         string
				before, after map[string]uint64
			}{{"gtund", before, after}, {"the peer", peerBefore, peerAfter}} {
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

// A peer sends from its tunnel address or its subnets and reaches what its
// allowed names; anything else is dropped, counted and the session lives.
func TestAntiSpoofingAndACL(t *testing.T) {
	m := newMemServer(t, testConfig(t,
		config.Peer{Name: "vm", Allowed: []netip.Prefix{pfx("10.244.0.0/16")}},
		config.Peer{Name: "site", Subnets: []netip.Prefix{pfx("172.16.0.0/24")}}))
	clients := map[string]*memClient{"vm": m.connect("vm"), "site": m.connect("site")}
	to := func(src, dst string, proto byte, l4 ...byte) func(string) []byte {
		return func(me string) []byte {
			if src == "" {
				src = me
			}
			return frame(src, dst, proto, l4...)
		}
	}
	runFromPeer(t, m, clients, []fromPeerCase{
		{"to a pod", "vm", to("", "10.244.1.20", 6, syn22...), ""},
		{"to a service outside its allowed", "vm", to("", "10.96.0.10", 17, udp53...), "acl"},
		{"to a service in the served routes", "site", to("", "10.96.0.10", 17, udp53...), ""},
		{"to the cluster's VPC, never served", "site", to("", "10.0.0.3", 6, syn22...), "acl"},
		{"to another peer", "vm", to("", "100.64.240.3", 1, ping...), "acl"},
		{"to the internet", "vm", to("", "203.0.113.5", 6, syn22...), "acl"},
		{"from another peer's address", "vm", to("100.64.240.3", "10.244.1.20", 6, syn22...), "spoofed_source"},
		{"from an address outside the pool", "vm", to("10.244.1.20", "10.244.1.21", 6, syn22...), "spoofed_source"},
		{"from its subnets", "site", to("172.16.0.9", "10.244.1.20", 6, syn22...), ""},
		{"from another peer's subnets", "vm", to("172.16.0.9", "10.244.1.20", 6, syn22...), "spoofed_source"},
		{"from beside its subnets", "site", to("172.16.1.9", "10.244.1.20", 6, syn22...), "spoofed_source"},
		{"IPv6 from nowhere", "vm", func(string) []byte {
			f := make([]byte, packet.VnetHdrLen+40)
			f[packet.VnetHdrLen] = 0x60
			return f
		}, "spoofed_source"},
		{"short frame", "vm", func(string) []byte { return make([]byte, packet.VnetHdrLen) }, "malformed"},
		{"not IP", "vm", func(string) []byte { return append(make([]byte, packet.VnetHdrLen), 0x10, 0, 0) }, "malformed"},
		{"cut short", "vm", func(me string) []byte { return frame(me, "10.244.1.20", 6)[:packet.VnetHdrLen+19] }, "malformed"},
		{"offloaded super-packet", "vm", func(me string) []byte { return tso(me, "10.244.1.20") }, ""},
		{"offload header beyond its packet", "vm", func(me string) []byte {
			f := frame(me, "10.244.1.20", 6, syn22...)
			packet.VnetHdr{Flags: packet.VnetNeedsCsum, CsumStart: 20, CsumOffset: 200}.Encode(f)
			return f
		}, "bad_offload"},
		{"UDP segmentation of a TCP packet", "vm", func(me string) []byte {
			f := tso(me, "10.244.1.20")
			f[1] = packet.GSOUDPL4
			return f
		}, "bad_offload"},
	})
	for name, c := range clients {
		select {
		case <-c.done:
			t.Errorf("%s's session ended over a dropped packet", name)
		default:
		}
	}
}

// gtund's own tunnel address answers pings and nothing else, unless the
// peer's allowed names it: its other services (sshd, the metrics port)
// are the host's, not the cluster's. Its other addresses are any
// destination.
func TestGatewayAddressRule(t *testing.T) {
	routes := []netip.Prefix{pfx("10.244.0.0/16"), pfx("10.96.0.0/12")}
	m := newMemServer(t, testConfig(t,
		config.Peer{Name: "closed", Allowed: routes, Subnets: []netip.Prefix{pfx("172.16.0.0/24")}},
		config.Peer{Name: "open", Allowed: append(slices.Clone(routes), pfx(gw+"/32"))}))
	clients := map[string]*memClient{"closed": m.connect("closed"), "open": m.connect("open")}
	to := func(src string, proto byte, l4 []byte) func(string) []byte {
		return func(me string) []byte {
			if src == "" {
				src = me
			}
			return frame(src, gw, proto, l4...)
		}
	}
	const gwVPC = "10.0.0.2" // gtund's address in the cluster's VPC
	runFromPeer(t, m, clients, []fromPeerCase{
		{"ping", "closed", to("", 1, ping), ""},
		{"ping from a subnet", "closed", to("172.16.0.5", 1, ping), ""},
		{"ssh", "closed", to("", 6, syn22), "gateway_host"},
		{"dns", "closed", to("", 17, udp53), "gateway_host"},
		{"echo reply", "closed", to("", 1, pong), "gateway_host"},
		{"forged fragmentation needed", "closed", to("", 1, unrch), "gateway_host"},
		{"spoofed ping", "closed", to("100.64.240.9", 1, ping), "spoofed_source"},
		{"ssh to its VPC address", "closed", func(me string) []byte { return frame(me, gwVPC, 6, syn22...) }, "acl"},
		{"ssh, allowed", "open", to("", 6, syn22), ""},
		{"dns, allowed", "open", to("", 17, udp53), ""},
		{"ssh to its VPC address, gateway allowed", "open", func(me string) []byte { return frame(me, gwVPC, 6, syn22...) }, "acl"},
	})
	for _, reason := range []DropReason{DropMalformed, DropBadOffload, DropSpoofed, DropACL, DropGatewayHost, DropTunWrite, DropQueueFull} {
		if dropLines[reason] == "" {
			t.Errorf("no log line for %s", reason)
		}
	}
}

// With a map and split DNS, a peer is pushed gtund's own DNS proxy (the
// gateway address): it may send DNS there, UDP and TCP, and nothing else; a
// peer whose allowed reaches no DNS server is pushed none and may not.
func TestGatewayDNSProxyRule(t *testing.T) {
	cfg := testConfig(t, config.Peer{Name: "vm"}, config.Peer{Name: "pods", Allowed: []netip.Prefix{pfx("10.244.0.0/16")}})
	cfg.Routes = []netip.Prefix{pfx("10.244.0.0/16"), pfx("10.96.0.0/16")}
	cfg.Map = []config.Mapping{{Real: pfx("10.96.0.0/16"), Virtual: pfx("100.110.0.0/16")}}
	cfg.DNS = config.DNS{Servers: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, Domains: []string{"cluster.local"}}
	for i := range cfg.Peers {
		if cfg.Peers[i].Name == "vm" {
			cfg.Peers[i].Allowed = cfg.Routes
		}
	}
	m := newMemServer(t, cfg)
	clients := map[string]*memClient{"vm": m.connect("vm"), "pods": m.connect("pods")}
	for name, p := range m.s.peers {
		if want := p.cfg.Name == "vm"; p.dnsProxy.Load() != want {
			t.Errorf("peer %v: dns proxy %v, want %v", name, p.dnsProxy.Load(), want)
		}
	}
	tcp53 := slices.Clone(syn22)
	tcp53[3] = 53
	to := func(proto byte, l4 []byte) func(string) []byte {
		return func(me string) []byte { return frame(me, gw, proto, l4...) }
	}
	runFromPeer(t, m, clients, []fromPeerCase{
		{"dns over udp", "vm", to(17, udp53), ""},
		{"dns over tcp", "vm", to(6, tcp53), ""},
		{"ssh", "vm", to(6, syn22), "gateway_host"},
		{"dns, no dns server allowed", "pods", to(17, udp53), "gateway_host"},
	})
}

// The host's packets go to the session that owns their destination: a
// pool address by its slot, a peer's subnets by longest prefix; no session
// (an address no one holds, a peer gone, a destination no peer has):
// no_route, counted for gtund alone.
func TestRoutingToPeers(t *testing.T) {
	m := newMemServer(t, testConfig(t,
		config.Peer{Name: "a", Subnets: []netip.Prefix{pfx("172.16.0.0/16")}},
		config.Peer{Name: "b", Subnets: []netip.Prefix{pfx("172.16.5.0/24")}},
		config.Peer{Name: "c"}))
	a, b, c := m.connect("a"), m.connect("b"), m.connect("c")
	for _, tc := range []struct {
		dst  string
		want *memClient
	}{
		{a.addr.String(), a}, {b.addr.String(), b}, {c.addr.String(), c},
		{"172.16.0.9", a}, {"172.16.5.9", b}, {"172.16.6.9", a}, // longest prefix
		{"100.64.240.200", nil}, {gw, nil}, {"10.244.1.20", nil}, {"172.17.0.1", nil},
	} {
		t.Run(tc.dst, func(t *testing.T) {
			m.inject(t, frame("10.244.1.20", tc.dst, 17, udp53...), tc.want)
			for _, cl := range []*memClient{a, b, c} {
				cl.quiet()
			}
		})
	}
	for _, p := range m.s.Status().Peers {
		if len(p.Drops) != 0 {
			t.Errorf("peer %s has drops %v: no_route belongs to no peer", p.Name, p.Drops)
		}
	}
}

// Site-to-site: a peer's subnets are routed to it while it is connected;
// once it is gone packets to them are dropped here (no_route, while the
// kernel route lingers) until it is back, when they reach its new session.
func TestSubnetsFollowTheirPeer(t *testing.T) {
	m := newMemServer(t, testConfig(t, config.Peer{Name: "site", Subnets: []netip.Prefix{pfx("172.16.0.0/24")}}))
	site := m.connect("site")
	toSite := frame("10.244.1.20", "172.16.0.5", 6, syn22...)
	m.dev.Inject(toSite)
	if got := site.next(); !bytes.Equal(got, toSite) {
		t.Fatalf("got % x", got)
	}
	site.sess.Close()
	m.waitRouted(netip.MustParseAddr("172.16.0.5"), false)
	m.waitRouted(site.addr, false)
	site = m.connect("site")
	m.waitRouted(netip.MustParseAddr("172.16.0.5"), true)
	m.dev.Inject(toSite)
	if got := site.next(); !bytes.Equal(got, toSite) {
		t.Fatalf("after the reconnect: got % x", got)
	}
	fromSite := frame("172.16.0.5", "10.244.1.20", 6, syn22...)
	site.send(fromSite)
	if got := m.out(); !bytes.Equal(got, fromSite) {
		t.Fatalf("TUN got % x", got)
	}
}

// A client that reconnects before its old session timed out takes over:
// its address now routes to the new session, and the old one ends.
func TestNewSessionTakesOver(t *testing.T) {
	m := newMemServer(t, testConfig(t, config.Peer{Name: "vm"}))
	old := m.connect("vm")
	cur := m.dial("vm", nil)
	if cur.addr != old.addr {
		t.Fatalf("new session got %s, the old one %s: the lease is sticky", cur.addr, old.addr)
	}
	select {
	case <-old.done:
	case <-time.After(wait):
		t.Fatal("the old session still runs")
	}
	m.waitRouted(cur.addr, true)
	f := frame("10.244.1.20", cur.addr.String(), 17, udp53...)
	m.dev.Inject(f)
	if got := cur.next(); !bytes.Equal(got, f) {
		t.Fatalf("got % x", got)
	}
	if st := m.s.Status().Peers[0]; st.Sessions != 2 || !st.Connected {
		t.Errorf("peer status %+v, want 2 sessions, connected", st)
	}
}

// A peer that stops reading costs only its own packets: once its socket
// buffers and send queue are full, gtund drops what the host sends it
// (queue_full, counted for it) and keeps delivering to everyone else at
// once; the TUN reader never waits on it.
func TestStalledPeerDoesNotBlockOthers(t *testing.T) {
	m := newMemServer(t, testConfig(t, config.Peer{Name: "stalled"}, config.Peer{Name: "vm"}))
	hold := make(chan struct{})
	stalled := m.dial("stalled", hold)
	m.waitRouted(stalled.addr, true)
	vm := m.connect("vm")
	defer close(hold)

	big := frame("10.244.1.20", stalled.addr.String(), 17, make([]byte, 16000)...)
	toVM := frame("10.244.1.20", vm.addr.String(), 17, udp53...)
	const flood = 2000 // 32 MB: beyond the socket buffers and the queue
	start := time.Now()
	for i := range flood {
		m.dev.Inject(big)
		if i%100 == 0 {
			m.dev.Inject(toVM)
			sent := time.Now()
			if got := vm.next(); !bytes.Equal(got, toVM) {
				t.Fatalf("vm got % x", got)
			}
			if d := time.Since(sent); d > time.Second {
				t.Fatalf("vm's packet took %v behind the stalled peer's flood", d)
			}
		}
	}
	for m.s.drops.Get(DropQueueFull) == 0 {
		if time.Since(start) > wait {
			t.Fatal("the stalled peer's queue never filled")
		}
		time.Sleep(time.Millisecond)
	}
	p := m.s.route(stalled.addr).peer
	t.Logf("%d frames of %d bytes to a peer that reads nothing: %d dropped (queue_full) in %v",
		flood, len(big), p.drops.Get(DropQueueFull), time.Since(start).Round(time.Millisecond))
	if m.s.route(vm.addr).peer.drops.Get(DropQueueFull) != 0 {
		t.Error("vm's packets were dropped")
	}
}

// Every drop reason is counted where it belongs (for gtund, and for the
// peer when there is one) and shows in status and metrics under its name.
func TestEveryDropReasonCounted(t *testing.T) {
	m := newMemServer(t, testConfig(t, config.Peer{Name: "vm", Allowed: []netip.Prefix{pfx("10.244.0.0/16")}}, config.Peer{Name: "stalled"}))
	vm := m.connect("vm")
	me := vm.addr.String()
	for _, f := range [][]byte{
		frame("100.64.240.9", "10.244.1.20", 6, syn22...),                           // spoofed_source
		frame(me, "10.96.0.10", 6, syn22...),                                        // acl
		frame(me, gw, 6, syn22...),                                                  // gateway_host
		make([]byte, packet.VnetHdrLen+1),                                           // malformed
		func() []byte { f := frame(me, "10.244.1.20", 6); f[0] = 0x81; return f }(), // bad_offload
	} {
		vm.send(f)
	}
	m.sync(vm)
	m.dev.FailWrites(errors.New("tun write: input/output error"))
	vm.send(vm.marker())                                               // tun_write
	m.dev.InjectIP([]byte{0x10})                                       // malformed, from the TUN
	m.dev.Inject(frame("10.244.1.20", "100.64.240.200", 17, udp53...)) // no_route
	hold := make(chan struct{})
	defer close(hold)
	stalled := m.dial("stalled", hold)
	m.waitRouted(stalled.addr, true)
	big := frame("10.244.1.20", stalled.addr.String(), 17, make([]byte, 16000)...)
	deadline := time.Now().Add(wait)
	for m.s.drops.Get(DropQueueFull) == 0 || m.s.drops.Get(DropTunWrite) == 0 || m.s.drops.Get(DropNoRoute) == 0 || m.s.drops.Get(DropMalformed) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("drops %v", m.s.drops.Snapshot())
		}
		m.dev.Inject(big) // queue_full
	}
	m.dev.FailWrites(nil)
	// The TUN reader handles frames in order: once vm has this one, it
	// has handled (and counted) every frame before it.
	toVM := frame("10.244.1.20", me, 17, udp53...)
	m.dev.Inject(toVM)
	for !bytes.Equal(vm.next(), toVM) {
	}

	st := m.s.Status()
	for r := range numDropReasons {
		if r == DropSendError {
			// A refusal of the udp transport's datagram path, which this
			// in-memory harness has not: TestSendDrop names it, session's
			// TestDatagramsRefusedIsNotQueueFull makes one.
			continue
		}
		if st.Drops[r.String()] == 0 {
			t.Errorf("%s not counted for gtund: %v", r, st.Drops)
		}
	}
	peers := map[string]map[string]uint64{}
	for _, p := range st.Peers {
		peers[p.Name] = p.Drops
	}
	want := map[string]map[string]uint64{
		"vm":      {"spoofed_source": 1, "acl": 1, "gateway_host": 1, "malformed": 1, "bad_offload": 1, "tun_write": 1},
		"stalled": {"queue_full": st.Drops["queue_full"]},
	}
	for name, w := range want {
		if fmt.Sprint(peers[name]) != fmt.Sprint(w) {
			t.Errorf("peer %s drops %v, want %v", name, peers[name], w)
		}
	}
	if st.Drops["malformed"] != 2 || st.Drops["no_route"] != 1 {
		t.Errorf("gtund's malformed %d (want the peer's and the TUN's: 2), no_route %d (want 1)", st.Drops["malformed"], st.Drops["no_route"])
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(func() Status { return st }))
	var metrics strings.Builder
	for r := range numDropReasons {
		fmt.Fprintf(&metrics, "gtund_drops_total{reason=%q} %d\n", r.String(), st.Drops[r.String()])
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader("# HELP gtund_drops_total All packets gtund dropped, by reason, including those counted per peer in gtund_peer_drops_total.\n# TYPE gtund_drops_total counter\n"+metrics.String()), "gtund_drops_total"); err != nil {
		t.Error(err)
	}
}

// The data plane allocates nothing per packet: a frame let through to the
// TUN, a frame dropped (its log line held back), a destination looked up.
func TestDataPlaneAllocs(t *testing.T) {
	m := newMemServer(t, testConfig(t, config.Peer{Name: "vm", Allowed: []netip.Prefix{pfx("10.244.0.0/16")}}))
	m.dev.Discard()
	vm := m.connect("vm")
	ps := m.s.route(vm.addr)
	pass, drop := frame(vm.addr.String(), "10.244.1.20", 6, syn22...), frame(vm.addr.String(), "10.96.0.10", 6, syn22...)
	toGW := frame(vm.addr.String(), gw, 1, ping...)
	m.s.fromPeer(ps, drop) // its line logged: the next ones are held back
	for name, f := range map[string]func(){
		"pass":        func() { m.s.fromPeer(ps, pass) },
		"ping gtund":  func() { m.s.fromPeer(ps, toGW) },
		"drop":        func() { m.s.fromPeer(ps, drop) },
		"route":       func() { m.s.route(vm.addr) },
		"route miss":  func() { m.s.route(netip.MustParseAddr("172.16.0.1")) },
		"count drops": func() { m.s.drops.Inc(DropNoRoute) },
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
}

// gtund's own address in allowed opens the host but is not pushed as a
// route: the client reaches it on the tunnel's subnet.
func TestGatewayInAllowedNotPushed(t *testing.T) {
	m := newMemServer(t, testConfig(t, config.Peer{Name: "open", Allowed: []netip.Prefix{pfx("10.244.0.0/16"), pfx(gw + "/32")}}))
	if c := m.connect("open"); !slices.Equal(c.cfg.Routes, []string{"10.244.0.0/16"}) {
		t.Errorf("pushed routes %v, want only 10.244.0.0/16", c.cfg.Routes)
	}
}

func BenchmarkFromPeer(b *testing.B) {
	m := newMemServer(b, testConfig(b, config.Peer{Name: "vm", Allowed: []netip.Prefix{pfx("10.244.0.0/16")}}))
	m.dev.Discard()
	vm := m.connect("vm")
	ps := m.s.route(vm.addr)
	pass, drop := frame(vm.addr.String(), "10.244.1.20", 6, syn22...), frame(vm.addr.String(), "10.96.0.10", 6, syn22...)
	b.Run("pass", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.s.fromPeer(ps, pass)
		}
	})
	b.Run("drop", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.s.fromPeer(ps, drop)
		}
	})
}
