package integration

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/client"
)

// gtun trusts a server only for what its routes cover. Packets sent for
// real from the gtund host with a raw socket, addressed to gtun's tunnel
// address and routed into gtund's TUN (which forwards them to gtun like
// any packet for that address), arrive at a UDP socket on vm when their
// source is inside the server's routes or is the server's own tunnel
// address; with a source outside (a public address, the cluster VPC's
// node, another pool address) gtun drops them, counts them as
// spoofed_source in total and for the server, and logs it.
func TestClientDropsSourcesOutsideServerRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	e.startServer(t, e.serverConfig(t, peer{name: "vm", pub: cpub}))
	cli := e.startClient(t, "vm", "vm", e.clientConfig(t, "vm", ckey, e.serverPub))
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)

	const tunAddr, udpPort = "100.64.240.2", 7777
	var ln *net.UDPConn
	var err error
	inNS(t, e.tp.NS("vm"), func() {
		ln, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(tunAddr), Port: udpPort})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	got := map[string]string{} // payload -> source seen by the socket
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := ln.ReadFromUDP(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got[string(buf[:n])] = from.IP.String()
			mu.Unlock()
		}
	}()

	raw := openRawUDP(t, e, "gw")
	send := func(src, payload string) {
		t.Helper()
		from := netip.AddrPortFrom(netip.MustParseAddr(src), 40000)
		if err := raw.send(from, netip.AddrPortFrom(netip.MustParseAddr(tunAddr), udpPort), []byte(payload)); err != nil {
			t.Fatalf("raw send from %s: %v", src, err)
		}
	}
	forged := map[string]string{
		"forged-public": "203.0.113.66",
		"forged-vpc":    "10.0.0.3", // the cluster VPC's node: outside the served routes
		"forged-pool":   "100.64.240.7",
	}
	for payload, src := range forged {
		for i := range 3 {
			send(src, fmt.Sprintf("%s-%d", payload, i))
		}
	}
	// Sent after the forged ones: once these arrived, the forged ones
	// had their chance (one session, in order).
	send("10.244.1.99", "inside-routes")
	send(gwTunAddr, "gateway")
	testnet.Eventually(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if got["inside-routes"] != "10.244.1.99" || got["gateway"] != gwTunAddr {
			return fmt.Errorf("received %v, want inside-routes from 10.244.1.99 and gateway from %s", got, gwTunAddr)
		}
		return nil
	})
	mu.Lock()
	for payload := range got {
		if strings.HasPrefix(payload, "forged") {
			t.Errorf("a packet with a source outside the server's routes reached vm: %q from %s", payload, got[payload])
		}
	}
	mu.Unlock()

	var st client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &st)
	want := uint64(3 * len(forged))
	if st.Drops["spoofed_source"] != want || st.Servers[0].Drops["spoofed_source"] != want {
		t.Errorf("spoofed_source drops: total %v, server %v; want %d", st.Drops, st.Servers[0].Drops, want)
	}
	out, err := exec.Command(bins.gtun, "status", "--socket", e.clientSocket("vm")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("drops: map[spoofed_source:%d]", want)) {
		t.Errorf("human status does not show the server's drops (%v):\n%s", err, out)
	}
	logged := slices.ContainsFunc(strings.Split(cli.Log(), "\n"), func(l string) bool {
		return strings.Contains(l, "source outside its routes") && strings.Contains(l, "server=cluster")
	})
	if !logged {
		t.Errorf("the drop was not logged:\n%s", cli.LogTail(20))
	}
	t.Logf("gtun: %d forged packets dropped (spoofed_source), the two with sources it trusts delivered", want)
}
