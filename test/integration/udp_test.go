package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/client"
	"github.com/gtun/gtun/pkg/dgram"
	"github.com/gtun/gtun/pkg/server"
)

// udpClient starts gtund with tcp and udp (and serverKeys, TOML lines of
// [server]) and a gtun over udp, and waits for its routes.
func (e *env) udpClient(t *testing.T, serverKeys ...string) *testnet.Proc {
	t.Helper()
	return e.udpClientEdited(t, `transports = ["tcp"]`, strings.Join(append([]string{`transports = ["tcp", "udp"]`}, serverKeys...), "\n"))
}

// udpClientEdited is udpClient with gtund's config rewritten by pairs
// (old, new, as rewrite takes them), which must give it udp.
func (e *env) udpClientEdited(t *testing.T, serverPairs ...string) *testnet.Proc {
	t.Helper()
	ckey, cpub := e.key(t, "vm")
	scfg := e.serverConfig(t, peer{name: "vm", pub: cpub})
	rewrite(t, scfg, serverPairs...)
	ccfg := e.clientConfig(t, "vm", ckey, e.serverPub)
	rewrite(t, ccfg, `transport = "tcp"`, `transport = "udp"`)
	srv := e.startServer(t, scfg)
	cli := e.startClient(t, "vm", "vm", ccfg)
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	return srv
}

// packetDatagram reports whether a captured payload is a data datagram
// of the udp transport (payload kind packet), not a kcp segment.
func packetDatagram(p []byte) bool {
	return len(p) >= dgram.DataOverhead && p[0] == dgram.TypeData && p[2] == dgram.KindPacket
}

// The udp transport carries ping, HTTP (8 MB) and UDP (DNS) to the pod and
// HTTP and DNS to the ClusterIP, its packets travel as packet datagrams, and what
// crosses the wan shows neither the pod's payload nor its HTTP headers.
func TestUDPTransport(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "dig")
	e.udpClient(t)
	e.tp.Start(t, "pod", "", testnet.GoBuild(t, "./tools/poddns"), "-listen", ":53", "-record", "demo.default.svc.cluster.local="+clusterIP)

	var packets int
	var sent bytes.Buffer
	sn := startSniffer(t, e, "vm", "wan0", func(c capturedUDP) bool {
		return c.dst == gwKCP || c.src == gwKCP
	})
	if out, err := e.tp.Exec("vm", "ping", "-c", "3", "-i", "0.2", "-W", "2", podIP); err != nil {
		t.Fatalf("ping pod over udp: %v\n%s", err, out)
	}
	out, err := e.tp.Exec("vm", "curl", "-fsS", "--max-time", "20", "-o", "/dev/null", "-w", "%{size_download}", "http://"+podIP+":8080/bytes?n=8000000")
	if err != nil || out != "8000000" {
		t.Fatalf("download over udp: %v %q", err, out)
	}
	if out, err := e.curl("vm", "http://"+clusterIP+"/"); err != nil || !strings.Contains(out, "hello from pod") {
		t.Fatalf("ClusterIP over udp: %v %q", err, out)
	}
	for _, server := range []string{podIP, clusterIP} { // the ClusterIP's :53 is DNATed to the pod on node
		if out, err := e.dig("vm", server, "demo.default.svc.cluster.local"); err != nil || !strings.Contains(out, clusterIP) {
			t.Fatalf("DNS (UDP) to %s over udp: %v %q", server, err, out)
		}
	}
	// Too large for the tunnel with DF: the sender is told (an ICMP error,
	// here from its own kernel at gtun0 / gtund0), never a silent loss.
	// 1400 bytes of ping and 28 of ICMP and IP headers exceed the MTU.
	if out, err := e.tp.Exec("vm", "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1400", podIP); err == nil || !strings.Contains(out, "mtu=1400") {
		t.Errorf("vm: an oversize DF ping: %v %q", err, out)
	}
	var ss0 server.Status
	status(t, bins.gtund, e.serverSocket(), &ss0)
	vmTunnel, _, _ := strings.Cut(ss0.Peers[0].Address, "/")
	if out, err := e.tp.Exec("gw", "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1400", vmTunnel); err == nil || !strings.Contains(out, "mtu=1400") {
		t.Errorf("gw: an oversize DF ping to vm's tunnel address: %v %q", err, out)
	}
	// Exactly the tunnel MTU with DF crosses, both ways: its datagram
	// (1,460 bytes) fits the wan's 1500.
	if out, err := e.tp.Exec("vm", "ping", "-c", "2", "-i", "0.2", "-W", "2", "-M", "do", "-s", "1372", podIP); err != nil {
		t.Errorf("vm: a DF ping of exactly the tunnel MTU to the pod: %v %q", err, out)
	}
	sn.close()
	for _, c := range sn.captured() {
		if packetDatagram(c.payload) {
			packets++
		}
		sent.Write(c.payload)
	}
	for _, m := range []string{"GTUN-CLEARTEXT-MARKER", "HTTP/1.1 200", "hello from pod"} {
		if bytes.Contains(sent.Bytes(), []byte(m)) {
			t.Errorf("%q crossed the wan in clear", m)
		}
	}
	if packets < 2000 { // 8 MB is ~5,700 datagrams of ~1400 bytes; a busy sniffer misses some
		t.Fatalf("%d packet datagrams captured on the wan (%d bytes of UDP): the flows did not ride the udp transport", packets, sent.Len())
	}
	t.Logf("UDP transport: %d packet datagrams, %d bytes of UDP on the wan, nothing in clear", packets, sent.Len())

	var st client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &st)
	if s := st.Servers[0]; s.Transport != "udp" || s.State != "connected" {
		t.Fatalf("client status: transport %q state %q", s.Transport, s.State)
	}
	var ss server.Status
	status(t, bins.gtund, e.serverSocket(), &ss)
	if p := ss.Peers[0]; p.Transport != "udp" || p.RxPackets == 0 || p.TxPackets == 0 {
		t.Fatalf("server status of the peer: %+v", p)
	}
}

// Packet datagrams captured on the wan and sent again from the client's
// own address and port, as they were and in reverse order, are dropped
// and counted as replays; the session and a download running meanwhile
// carry on.
//
// Serial: an attack beside a 50 MB download, and every replay must be
// counted (a socket overflowing under other tests' load would drop some).
func TestUDPReplayedAndReorderedDatagramsDropped(t *testing.T) {
	e := newEnv(t)
	e.udpClient(t)
	sn := startSniffer(t, e, "vm", "wan0", func(c capturedUDP) bool {
		return c.dst == gwKCP && packetDatagram(c.payload)
	})
	out, err := e.tp.Exec("vm", "curl", "-fsS", "--max-time", "20", "-o", "/dev/null", "-w", "%{size_download}", "http://"+podIP+":8080/bytes?n=2000000")
	if err != nil || out != "2000000" {
		t.Fatalf("download over udp: %v %q", err, out)
	}
	sn.close()
	caps := sn.captured()
	if len(caps) < 20 { // the download's ACKs (GRO on vm joins the data: an ACK per super-packet or two)
		t.Fatalf("%d packet datagrams from vm captured", len(caps))
	}
	before := e.clientStatusOf(t)
	var st0 server.Status
	status(t, bins.gtund, e.serverSocket(), &st0)

	// A long download during the replays: the session must not notice.
	dl := make(chan error, 1)
	go func() {
		out, err := e.tp.Exec("vm", "curl", "-fsS", "--max-time", "60", "-o", "/dev/null", "-w", "%{size_download}", "http://"+podIP+":8080/bytes?n=50000000")
		if err == nil && out != "50000000" {
			err = fmt.Errorf("got %q bytes", out)
		}
		dl <- err
	}()
	raw := openRawUDP(t, e, "vm")
	var sent uint64
	for round := range 6 {
		for i := range caps {
			c := caps[i]
			if round%2 == 1 { // reordered: last first
				c = caps[len(caps)-1-i]
			}
			if err := raw.send(c.src, c.dst, c.payload); err != nil {
				t.Fatalf("raw send: %v", err)
			}
			sent++
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := <-dl; err != nil {
		t.Fatalf("download during the replays: %v", err)
	}
	var st server.Status
	status(t, bins.gtund, e.serverSocket(), &st)
	replays := st.Datagrams.Dropped[dgram.DropReplay.String()] - st0.Datagrams.Dropped[dgram.DropReplay.String()]
	t.Logf("UDP replay: %d captured datagrams sent again (as captured and reversed, 3 times each): %d dropped as replays", sent, replays)
	if replays < sent {
		t.Errorf("dropped %d replays of %d sent (all: %v)", replays, sent, st.Datagrams.Dropped)
	}
	after := e.clientStatusOf(t)
	if after.Reconnects != before.Reconnects || !after.Since.Equal(before.Since) || after.State != "connected" {
		t.Errorf("the session was disturbed: before %+v, after %+v", before, after)
	}
}

func (e *env) clientStatusOf(t *testing.T) client.ServerStatus {
	t.Helper()
	var st client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &st)
	if len(st.Servers) == 0 {
		t.Fatal("no server in gtun's status")
	}
	return st.Servers[0]
}

// NAT rebinding: mid-download the client's source port changes on the wan
// (stateless nftables rewrites in vm, as a NAT that lost its mapping
// would do); gtund follows the first authenticated datagram from the new
// port, the download completes and the session is the same one. Keys
// rotate every second meanwhile (the datagrams' epochs and the control
// stream's records), counted in both daemons' status.
//
// Serial: a 100 MB download, and key updates counted within a bound.
func TestUDPNATRebindingKeepsSessionAndFlow(t *testing.T) {
	e := newEnv(t)
	e.udpClient(t, `rekey_interval = "1s"`)
	var ss server.Status
	status(t, bins.gtund, e.serverSocket(), &ss)
	old := ss.Peers[0].Endpoint
	oldPort := old[strings.LastIndexByte(old, ':')+1:]
	const newPort = "40123"
	before := e.clientStatusOf(t)

	dl := make(chan error, 1)
	go func() {
		out, err := e.tp.Exec("vm", "curl", "-fsS", "--max-time", "60", "-o", "/dev/null", "-w", "%{size_download}", "http://"+podIP+":8080/bytes?n=100000000")
		if err == nil && out != "100000000" {
			err = fmt.Errorf("got %q bytes", out)
		}
		dl <- err
	}()
	time.Sleep(time.Second)
	rules := fmt.Sprintf(`table inet rebind {
	chain out { type filter hook output priority -400; oifname "wan0" udp sport %[1]s udp dport %[3]s udp sport set %[2]s; }
	chain in { type filter hook prerouting priority -400; iifname "wan0" udp dport %[2]s udp sport %[3]s udp dport set %[1]s; }
}`, oldPort, newPort, port)
	cmd := e.tp.Command(t.Context(), "vm", "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in vm: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = e.tp.Exec("vm", "nft", "delete", "table", "inet", "rebind") })
	testnet.Eventually(t, 5*time.Second, func() error {
		var st server.Status
		if err := tryStatus(bins.gtund, e.serverSocket(), &st); err != nil {
			return err
		}
		if ep := st.Peers[0].Endpoint; ep != testnet.VMWan+":"+newPort {
			return fmt.Errorf("gtund has the peer at %s", ep)
		}
		return nil
	})
	if err := <-dl; err != nil {
		t.Fatalf("download across the rebinding: %v", err)
	}
	after := e.clientStatusOf(t)
	if after.Reconnects != before.Reconnects || !after.Since.Equal(before.Since) || after.State != "connected" {
		t.Errorf("the session did not survive the rebinding: before %+v, after %+v", before, after)
	}
	e.reach(t, "vm", "http://"+clusterIP+"/", 5*time.Second)
	// Keepalives (1 s) keep records and datagrams flowing both ways: with
	// rekey_interval 1s every few seconds bring key updates each way.
	testnet.Eventually(t, 6*time.Second, func() error {
		var rs server.Status
		if err := tryStatus(bins.gtund, e.serverSocket(), &rs); err != nil {
			return err
		}
		c := e.clientStatusOf(t).Rekeys
		if r := rs.Peers[0].Rekeys; c.Sent < 2 || c.Received < 2 || r.Sent < 2 || r.Received < 2 {
			return fmt.Errorf("key updates with rekey_interval 1s: gtun %+v, gtund %+v", c, r)
		}
		return nil
	})
	t.Logf("NAT rebinding: gtund followed %s -> %s:%s, the 100 MB download completed on the same session", old, testnet.VMWan, newPort)
}

// Small UDP packets at a packet rate through the udp transport, each way
// (iperf3 -u, 64-byte payloads): vm->pod they leave gtun's TUN with the
// checksum left to the offload, pod->vm gtund forwards them with complete
// checksums, and both are joined into GSO sends whenever the TUN has
// several ready. They arrive, nearly all (UDP, on a loaded machine) and
// in order, and neither daemon counts a drop.
func TestUDPSmallPackets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "iperf3", "ss")
	e.udpClient(t)
	for _, reverse := range []bool{false, true} {
		e.tp.Start(t, "pod", "", "iperf3", "-s", "-1")
		testnet.Eventually(t, 10*time.Second, func() error {
			if out, _ := e.tp.Exec("pod", "ss", "-Hltn", "sport", "=", ":5201"); !strings.Contains(out, "5201") {
				return fmt.Errorf("iperf3 server not listening yet: %q", out)
			}
			return nil
		})
		args := []string{"iperf3", "-c", podIP, "-u", "-l", "64", "-b", "8M", "-t", "3", "-J", "--connect-timeout", "5000"}
		way := "vm->pod"
		if reverse {
			args, way = append(args, "-R"), "pod->vm"
		}
		out, err := e.tp.Exec("vm", args...)
		var res struct {
			Error string `json:"error"`
			End   struct {
				Sum struct {
					Packets     int     `json:"packets"`
					Lost        int     `json:"lost_packets"`
					LostPercent float64 `json:"lost_percent"`
				} `json:"sum"`
				Streams []struct {
					UDP struct {
						OutOfOrder int `json:"out_of_order"`
					} `json:"udp"`
				} `json:"streams"`
			} `json:"end"`
		}
		if jerr := json.Unmarshal([]byte(out), &res); err != nil || jerr != nil || res.Error != "" || len(res.End.Streams) != 1 {
			t.Fatalf("%s: iperf3 %v, json %v, error %q\n%s", way, err, jerr, res.Error, tail(out, 1500))
		}
		s := res.End.Sum
		t.Logf("UDP 64-byte packets %s at 8 Mbit/s for 3 s: %d packets, %d lost (%.2f%%), %d out of order", way, s.Packets, s.Lost, s.LostPercent, res.End.Streams[0].UDP.OutOfOrder)
		if s.Packets < 10_000 || s.LostPercent > 5 {
			t.Errorf("%s: %d packets, %.2f%% lost", way, s.Packets, s.LostPercent)
		}
		if ooo := res.End.Streams[0].UDP.OutOfOrder; ooo != 0 {
			t.Errorf("%s: %d packets out of order", way, ooo)
		}
	}
	var cst client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &cst)
	sst := gtundStatus(t, e)
	if len(cst.Drops) != 0 || len(sst.Drops) != 0 {
		t.Errorf("drops: gtun %v, gtund %v", cst.Drops, sst.Drops)
	}
}

// On a path that carries jumbo frames (every link 9000 bytes here, as in
// a cloud network that allows them), gtund takes an mtu of 8900 with udp:
// a DF ping of exactly the tunnel MTU reaches the pod, one byte more is
// refused with an ICMP error naming the MTU, and a download's packets
// cross the wan as datagrams larger than a 1500-byte path would carry,
// whole (no IP fragments).
func TestUDPJumboMTU(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, l := range [][2]string{{"vm", "wan0"}, {"gw", "wan0"}, {"gw", "vpc0"}, {"node", "vpc0"}, {"node", "pod0"}, {"pod", "eth0"}} {
		e.tp.MustExec(t, l[0], "ip", "link", "set", l[1], "mtu", "9000")
	}
	e.udpClientEdited(t, `transports = ["tcp"]`, `transports = ["tcp", "udp"]`, "mtu = 1400", "mtu = 8900")
	if out := e.tp.MustExec(t, "vm", "ip", "link", "show", "gtun0"); !strings.Contains(out, "mtu 8900") {
		t.Fatalf("gtun0 has not the pushed MTU 8900: %s", out)
	}

	sn := startSniffer(t, e, "vm", "wan0", func(c capturedUDP) bool { return c.src == gwKCP && packetDatagram(c.payload) })
	// 8872 bytes of ping and 28 of ICMP and IP headers: exactly the MTU.
	if out, err := e.tp.Exec("vm", "ping", "-c", "2", "-i", "0.2", "-W", "2", "-M", "do", "-s", "8872", podIP); err != nil {
		t.Fatalf("a DF ping of exactly the tunnel MTU: %v\n%s", err, out)
	}
	if out, err := e.tp.Exec("vm", "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "8873", podIP); err == nil || !strings.Contains(out, "mtu=8900") {
		t.Errorf("an oversize DF ping: %v %q", err, out)
	}
	out, err := e.tp.Exec("vm", "curl", "-fsS", "--max-time", "20", "-o", "/dev/null", "-w", "%{size_download}", "http://"+podIP+":8080/bytes?n=8000000")
	if err != nil || out != "8000000" {
		t.Fatalf("download over udp: %v %q", err, out)
	}
	sn.close()
	var jumbo, largest int
	for _, c := range sn.captured() {
		largest = max(largest, len(c.payload))
		if len(c.payload) > 1500 {
			jumbo++
		}
	}
	// A datagram cut into IP fragments would show as pieces under 1500
	// bytes: one over 1500 crossed whole.
	if jumbo < 100 {
		t.Fatalf("%d packet datagrams from gw larger than 1500 bytes (largest %d): the download did not ride jumbo datagrams", jumbo, largest)
	}
	t.Logf("jumbo path: %d packet datagrams from gw over 1500 bytes, the largest %d", jumbo, largest)
}
