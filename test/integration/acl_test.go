package integration

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/server"
)

// send hands gtund one plain UDP packet from the raw peer.
func (p *rawPeer) send(src, dst string) {
	pkt := udpPacket(netip.MustParseAddr(src), netip.MustParseAddr(dst), []byte("gtun acl test"))
	// A valid header checksum, so the kernel forwards what gtund lets
	// through (UDP's zero checksum means "none").
	binary.BigEndian.PutUint16(pkt[10:], ^packet.Fold(packet.Sum(pkt[:20], 0)))
	p.sendIP(pkt)
}

// A peer's `allowed` limits its destinations and its tunnel address plus its
// `subnets` are the only sources it may use; everything else is dropped and
// counted per peer and reason, in `gtund status` and its --json. A gateway
// gtun that forwards its VPC's own addresses (masquerade off) without the
// peer's subnets configured on gtund is refused the same way.
func TestACLAndSpoofCountedPerPeer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "tcpdump")
	ckey, cpub := e.key(t, "vm")
	rkey, rpub := e.key(t, "raw")
	e.startServer(t, e.serverConfig(t,
		peer{name: "vm", pub: cpub}, // no subnets: vm2's own address is not the peer's
		peer{name: "raw", pub: rpub, extra: `allowed = ["10.244.0.0/16"]` + "\n" + `subnets = ["192.168.50.0/24"]`}))
	cli := e.startClient(t, "vm", "vm", e.gatewayClientConfig(t, "vm", ckey, "gateway = true\nmasquerade = false\n"))
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)

	// vm2's packets cross with their real source, which gtund refuses.
	if out, err := e.curl("vm2", "http://"+podIP+":8080/"); err == nil {
		t.Fatalf("vm2 reached the pod with an address gtund does not know: %q", out)
	}

	// The pod watches for the one packet that must arrive.
	capture := e.tp.Start(t, "pod", filepath.Join(e.dir, "pod-tcpdump.log"), "timeout", "20", "tcpdump", "-l", "-n", "-i", "eth0", "-c", "1", "udp and src host 192.168.50.7")
	testnet.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(capture.Log(), "listening on") {
			return fmt.Errorf("tcpdump not ready: %s", capture.Log())
		}
		return nil
	})
	raw := dialSession(t, e, "vm", rkey)
	raw.send("192.168.50.7", podIP)         // from its subnet, allowed: forwarded
	raw.send("192.168.51.7", podIP)         // outside its subnets: spoofed_source
	raw.send("192.168.50.7", clusterIP)     // not in allowed: acl
	raw.send(raw.addr.String(), "10.0.0.3") // the node, not in allowed: acl
	if code, err := capture.Wait(15 * time.Second); err != nil || code != 0 {
		t.Fatalf("the allowed packet from the peer's subnet did not reach the pod (tcpdump exit %d, %v):\n%s", code, err, capture.Log())
	}

	var sst server.Status
	testnet.Eventually(t, 5*time.Second, func() error {
		status(t, bins.gtund, e.serverSocket(), &sst)
		// Peers are sorted by name: raw, vm.
		raw, vm := sst.Peers[0].Drops, sst.Peers[1].Drops
		if raw[server.DropACL.String()] != 2 || raw[server.DropSpoofed.String()] != 1 || len(raw) != 2 {
			return fmt.Errorf("raw drops %v, want acl=2 spoofed_source=1", raw)
		}
		if vm[server.DropSpoofed.String()] == 0 || vm[server.DropACL.String()] != 0 {
			return fmt.Errorf("vm drops %v, want spoofed_source only", vm)
		}
		return nil
	})
	out, err := exec.Command(bins.gtund, "status", "--socket", e.serverSocket()).CombinedOutput()
	if err != nil {
		t.Fatalf("gtund status: %v\n%s", err, out)
	}
	var rawLine string
	for l := range strings.Lines(string(out)) {
		if strings.HasPrefix(l, "raw ") {
			rawLine = l
		}
	}
	if !strings.Contains(rawLine, "acl=2 spoofed_source=1") {
		t.Errorf("human status does not show raw's drops by reason:\n%s", out)
	}
	if !strings.Contains(string(out), "subnets of raw via gtund0:\n  192.168.50.0/24") {
		t.Errorf("human status does not list raw's subnet:\n%s", out)
	}
}
