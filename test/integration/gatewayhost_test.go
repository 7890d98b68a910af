package integration

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/server"
)

const (
	gwTunAddr   = "100.64.240.1" // gtund's own tunnel address
	gwHostPort  = "18080"        // a service of the gtund host, listening on every address
	metricsPort = "9624"
)

// ipv4Packet builds an IPv4 packet of protocol proto around l4 with a
// valid header checksum (the kernel drops one without).
func ipv4Packet(src, dst string, proto byte, l4 []byte) []byte {
	p := make([]byte, 20, 20+len(l4))
	p[0], p[8], p[9] = 0x45, 64, proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	p = append(p, l4...)
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[10:], ^packet.Fold(packet.Sum(p[:20], 0)))
	return p
}

// icmpEcho is an ICMP echo request (typ 8) or reply (typ 0) with a valid
// checksum.
func icmpEcho(src, dst string, typ byte, id, seq uint16) []byte {
	m := []byte{typ, 0, 0, 0, 0, 0, 0, 0, 'g', 't', 'u', 'n', '-', 'g', 'w', '!'}
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	binary.BigEndian.PutUint16(m[2:], ^packet.Fold(packet.Sum(m, 0)))
	return ipv4Packet(src, dst, 1, m)
}

// tcpSYN is a TCP SYN to port (checksum left zero: gtund checks addresses
// and protocols, not checksums).
func tcpSYN(src, dst string, port uint16) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], 40000)
	binary.BigEndian.PutUint16(h[2:], port)
	h[12], h[13] = 0x50, 0x02
	binary.BigEndian.PutUint16(h[14:], 64240)
	return ipv4Packet(src, dst, 6, h)
}

// The gtund host is closed to peers: its tunnel address answers pings,
// and a TCP service listening on every address of the host, gtund's own
// metrics port among them, cannot be reached through the tunnel (dropped
// as gateway_host, counted per peer); the host's VPC and WAN addresses are
// outside allowed (acl). Forged packets from a peer built from the protocol
// packages are counted exactly. A peer whose allowed names the gateway
// address (after a reload) reaches the service.
func TestGatewayHostClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	rkey, rpub := e.key(t, "raw")
	scfg := e.serverConfig(t, peer{name: "vm", pub: cpub}, peer{name: "raw", pub: rpub})
	insertAfter(t, scfg, "keepalive", `metrics_listen = ":`+metricsPort+`"`) // every address, the tunnel's included
	e.tp.Start(t, "gw", filepath.Join(e.dir, "gw-service.log"), bins.podhttp, "-listen", ":"+gwHostPort, "-name", "gw-host")
	srv := e.startServer(t, scfg)
	cli := e.startClient(t, "vm", "vm", e.clientConfig(t, "vm", ckey, e.serverPub))
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)

	// Control: both services answer on the gateway address on the host
	// itself, so a refusal through the tunnel is the tunnel's doing.
	service := "http://" + gwTunAddr + ":" + gwHostPort + "/name"
	metrics := "http://" + gwTunAddr + ":" + metricsPort + "/metrics"
	testnet.Eventually(t, 10*time.Second, func() error {
		out, err := e.curl("gw", service)
		if err != nil || strings.TrimSpace(out) != "gw-host" {
			return fmt.Errorf("the host's service on %s: %v %q", service, err, out)
		}
		return nil
	})
	if out, err := e.curl("gw", metrics); err != nil || !strings.Contains(out, "gtund_") {
		t.Fatalf("gtund's metrics on the gateway address, from the host: %v %.200q", err, out)
	}

	if out, err := e.tp.Exec("vm", "ping", "-c", "3", "-i", "0.2", "-W", "2", gwTunAddr); err != nil {
		t.Fatalf("ping the gateway address through the tunnel: %v\n%s", err, out)
	}
	for _, url := range []string{service, metrics} {
		if out, err := e.tp.Exec("vm", "curl", "-fsS", "--max-time", "2", url); err == nil {
			t.Errorf("vm reached %s through the tunnel: %.200q", url, out)
		}
	}
	var sst server.Status
	testnet.Eventually(t, 5*time.Second, func() error {
		status(t, bins.gtund, e.serverSocket(), &sst)
		vm := sst.Peers[1] // sorted by name: raw, vm
		if vm.Name != "vm" || vm.Drops[server.DropGatewayHost.String()] < 2 || sst.Drops[server.DropGatewayHost.String()] < 2 {
			return fmt.Errorf("vm's drops %v, total %v: want gateway_host from both connection attempts", vm.Drops, sst.Drops)
		}
		return nil
	})
	t.Logf("gtund drops after vm's two refused connections: %v", sst.Peers[1].Drops)

	// Forged packets, counted exactly: a ping passes and is answered;
	// TCP, UDP and an ICMP echo reply to the gateway address do not; the
	// host's VPC and WAN addresses are outside allowed.
	raw := dialSession(t, e, "vm", rkey)
	me := raw.addr.String()
	raw.sendIP(icmpEcho(me, gwTunAddr, 8, 0x4747, 1))
	deadline := time.After(5 * time.Second)
	for answered := false; !answered; {
		select {
		case p := <-raw.recv:
			answered = len(p) >= 28 && p[9] == 1 && p[20] == 0 && binary.BigEndian.Uint16(p[24:]) == 0x4747 &&
				netip.AddrFrom4([4]byte(p[12:16])).String() == gwTunAddr
		case <-deadline:
			t.Fatal("no echo reply from the gateway address to the forged ping")
		}
	}
	raw.sendIP(tcpSYN(me, gwTunAddr, 22))
	raw.sendIP(tcpSYN(me, gwTunAddr, 9624))
	raw.sendIP(ipv4Packet(me, gwTunAddr, 17, []byte{0x9c, 0x40, 0, 53, 0, 8, 0, 0}))
	raw.sendIP(icmpEcho(me, gwTunAddr, 0, 0x4747, 2))
	raw.sendIP(tcpSYN(me, gwVPCAddr, 22))
	raw.sendIP(tcpSYN(me, gwWAN, 22))
	testnet.Eventually(t, 5*time.Second, func() error {
		status(t, bins.gtund, e.serverSocket(), &sst)
		d := sst.Peers[0].Drops
		if d[server.DropGatewayHost.String()] != 4 || d[server.DropACL.String()] != 2 || len(d) != 2 {
			return fmt.Errorf("raw's drops %v, want gateway_host=4 acl=2", d)
		}
		return nil
	})

	// allowed naming the gateway address opens the host to vm, on reload;
	// it is not pushed as a route.
	rewrite(t, scfg, fmt.Sprintf("name = %q\npublic_key = %q\n", "vm", cpub),
		fmt.Sprintf("name = %q\npublic_key = %q\nallowed = [\"10.244.0.0/16\", \"10.96.0.0/12\", \"%s/32\"]\n", "vm", cpub, gwTunAddr))
	hup(t, "gtund", srv)
	testnet.Eventually(t, 10*time.Second, func() error {
		out, err := e.curl("vm", service)
		if err != nil || strings.TrimSpace(out) != "gw-host" {
			return fmt.Errorf("vm with the gateway in allowed: %v %q", err, out)
		}
		return nil
	})
	if out := e.tp.MustExec(t, "vm", "ip", "route", "show", "proto", "0x67"); strings.Contains(out, gwTunAddr) {
		t.Errorf("the gateway address was pushed as a route:\n%s", out)
	}
}
