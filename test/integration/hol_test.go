package integration

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/client"
)

// blackholeLink drops every packet in and out of a host's interface,
// without an answer (no RST, no ICMP), until the returned function runs.
func blackholeLink(t *testing.T, tp *testnet.Topology, host, ifname string) (restore func()) {
	t.Helper()
	rules := fmt.Sprintf(`table inet gtblackhole {
	chain blackhole_in { type filter hook input priority -300; iifname %q drop; }
	chain blackhole_forward { type filter hook forward priority -300; iifname %q drop; oifname %q drop; }
	chain blackhole_out { type filter hook output priority -300; oifname %q drop; }
}
`, ifname, ifname, ifname, ifname)
	cmd := tp.Command(t.Context(), host, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("blackhole %s on %s: %v\n%s", ifname, host, err, out)
	}
	done := false
	restore = func() {
		if !done {
			done = true
			tp.MustExec(t, host, "nft", "delete", "table", "inet", "gtblackhole")
		}
	}
	t.Cleanup(restore)
	return restore
}

// udpFlood sends datagrams of size bytes to dst from host at about perSec
// a second until the test ends or stop is called; it returns how many it
// sent so far.
func udpFlood(t *testing.T, tp *testnet.Topology, host, dst string, size, perSec int) (sent func() int64, stop func()) {
	t.Helper()
	var c net.Conn
	var err error
	inNS(t, tp.NS(host), func() { c, err = net.Dial("udp4", dst) })
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		payload := make([]byte, size)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			for range perSec / 100 {
				if _, err := c.Write(payload); err == nil {
					n.Add(1)
				}
			}
		}
	}()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			close(quit)
			<-finished
			c.Close()
		}
	}
	t.Cleanup(stop)
	return n.Load, stop
}

var pingSeq = regexp.MustCompile(`icmp_seq=(\d+) `)

// pingGaps reads ping's output: how many answers, and the longest run of
// sequence numbers without one (between the first and the last sent).
func pingGaps(out string, sent int) (answered, longestGap int) {
	seen := map[int]bool{}
	for _, m := range pingSeq.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		seen[n] = true
	}
	gap := 0
	for i := 1; i <= sent; i++ {
		if seen[i] {
			answered++
			gap = 0
			continue
		}
		gap++
		longestGap = max(longestGap, gap)
	}
	return answered, longestGap
}

// One cluster's path blackholes while gtun sends to it (a UDP stream of
// ~2,000 packets a second to its ClusterIP): gtun's TUN reader, which
// serves both clusters, never waits on that server's full socket. Pings to
// cluster 1 every 100 ms keep being answered throughout (the blackhole,
// until the dead session is detected, the reconnect attempts); packets for
// cluster 2 meanwhile are dropped and counted (queue_full, no_session).
// When the path is back, cluster 2 reconnects and answers.
func TestStalledClusterDoesNotStallOthers(t *testing.T) {
	c := newClusters(t)
	ckey, cpub := c.key(t, "vm")
	g1 := c.gtund1(`routes = ["10.244.0.0/16"]`)
	g2 := c.gtund2("100.64.240.0/24", `routes = ["10.96.0.0/12"]`)
	c.startGtund(t, g1, c.writeServer(t, g1, cpub))
	c.startGtund(t, g2, c.writeServer(t, g2, cpub))
	cli := c.startClient(t, "vm", "vm", c.writeClient(t, ckey,
		serverBlock("cluster1", gwWAN, c.serverPub, ""),
		serverBlock("cluster2", testnet.GW2Wan, c.pub2, "")))
	c.waitServers(t, 15*time.Second, "both connected", connected("cluster1", "cluster2"))
	c.answer(t, "http://"+podIP+":8080/name", "cluster1")
	c.answer(t, "http://"+clusterIP+"/name", "cluster2")

	sent, stopFlood := udpFlood(t, c.tp, "vm", clusterIP+":9999", 1200, 2000)
	const pings = 150 // 15 s at 100 ms
	ping := c.tp.Start(t, "vm", "", "ping", "-n", "-i", "0.1", "-W", "1", "-c", strconv.Itoa(pings), podIP)
	time.Sleep(2 * time.Second)
	if ping.Exited() {
		t.Fatalf("ping ended early:\n%s", ping.Log())
	}
	before := c.clientStatus(t)["cluster2"].TxPackets
	if before < 1000 {
		t.Fatalf("cluster2 carried %d packets of the stream before the blackhole: not under load", before)
	}

	restore := blackholeLink(t, c.tp, "gw2", "wan0")
	holed := time.Now()
	d := c.waitServers(t, 10*time.Second, "cluster2's dead session detected", func(m map[string]client.ServerStatus) bool {
		return m["cluster2"].State != "connected"
	})
	t.Logf("blackhole on gw2's wan link under load: cluster2's session declared dead %v later", d.Round(100*time.Millisecond))
	time.Sleep(4 * time.Second) // reconnect attempts into the blackhole, still under load
	restore()
	unholed := time.Since(holed)

	code, err := ping.Wait(30 * time.Second)
	answered, gap := pingGaps(ping.Log(), pings)
	t.Logf("ping cluster1 every 100 ms across %v of blackhole and the dead session's detection: %d of %d answered, longest gap %d (exit %d %v)",
		unholed.Round(100*time.Millisecond), answered, pings, gap, code, err)
	if answered < pings-3 || gap > 2 {
		t.Errorf("cluster1's pings stalled while cluster2 was blackholed: %d of %d answered, longest gap %d pings\n%s",
			answered, pings, gap, ping.LogTail(40))
	}
	stopFlood()
	st := c.clientStatus(t)
	var full client.Status
	status(t, bins.gtun, c.clientSocket("vm"), &full)
	t.Logf("stream: %d datagrams sent; gtun drops %v", sent(), full.Drops)
	if full.Drops["queue_full"]+full.Drops["no_session"] == 0 {
		t.Errorf("no packet for the blackholed cluster was dropped (drops %v): the test did not fill its path", full.Drops)
	}
	if st["cluster1"].Reconnects != 0 {
		t.Errorf("cluster1 reconnected %d times", st["cluster1"].Reconnects)
	}

	c.waitServers(t, 20*time.Second, "cluster2 back", connected("cluster2"))
	c.answer(t, "http://"+clusterIP+"/name", "cluster2")
	c.answer(t, "http://"+podIP+":8080/name", "cluster1")
	stop(t, "gtun", cli)
}
