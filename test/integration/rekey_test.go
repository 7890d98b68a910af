package integration

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/client"
	"github.com/gtun/gtun/pkg/server"
	"github.com/gtun/gtun/pkg/session"
)

// keyState is what both daemons report of the one session's keys.
type keyState struct {
	client client.ServerStatus
	server server.PeerStatus
	drops  map[string]uint64 // gtund's, all peers
}

func keyStatus(t *testing.T, e *env) keyState {
	t.Helper()
	var cst client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &cst)
	sst := gtundStatus(t, e)
	if len(cst.Servers) != 1 || len(sst.Peers) != 1 {
		t.Fatalf("status: %d servers, %d peers", len(cst.Servers), len(sst.Peers))
	}
	if len(cst.Drops) > 0 {
		t.Errorf("gtun drops: %v", cst.Drops)
	}
	return keyState{client: cst.Servers[0], server: sst.Peers[0], drops: sst.Drops}
}

// With rekey_interval = "1s" both sides replace their send key every
// second while traffic runs both ways at once (iperf3 --bidir) beside a
// download whose bytes are checked: no reconnect, no drop, no second
// without data either way, every byte intact; status and metrics on both
// sides show the key updates growing and keys never older than the
// interval and a keepalive. Over tcp, over kcp (whose records ride the
// KCP stream inside sealed datagrams), and over udp (each packet a
// datagram, sealed a GSO send's worth under one hold of the key), at a
// rate each carries.
func TestRekeyUnderLoad(t *testing.T) {
	for _, c := range []struct {
		transport, rate string
		download        int
	}{{"tcp", "500M", 200 << 20}, {"kcp", "100M", 40 << 20}, {"udp", "500M", 200 << 20}} {
		t.Run(c.transport, func(t *testing.T) { rekeyUnderLoad(t, c.transport, c.rate, c.download) })
	}
}

func rekeyUnderLoad(t *testing.T, transport, rate string, size int) {
	e := newEnv(t, "iperf3", "ss", "sha256sum")
	ckey, cpub := e.key(t, "vm")
	scfg := e.serverConfig(t, peer{name: "vm", pub: cpub})
	insertAfter(t, scfg, "keepalive", `rekey_interval = "1s"`)
	insertAfter(t, scfg, "keepalive", `metrics_listen = "127.0.0.1:9624"`)
	rewrite(t, scfg, `transports = ["tcp"]`, `transports = ["tcp", "kcp", "udp"]`)
	ccfg := e.clientConfig(t, "vm", ckey, e.serverPub)
	insertAfter(t, ccfg, "control_socket", `metrics_listen = "127.0.0.1:9625"`)
	rewrite(t, ccfg, `transport = "tcp"`, fmt.Sprintf("transport = %q", transport))
	e.startServer(t, scfg)
	cli := e.startClient(t, "vm", "vm", ccfg)
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	e.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)

	const seconds = 12
	run := startIperf(t, e, seconds, rate, "--bidir")
	time.Sleep(4 * time.Second)
	mid := keyStatus(t, e)
	out, err := e.tp.Exec("vm", "sh", "-c", fmt.Sprintf("curl -fsS --max-time 60 http://%s:8080/bytes?n=%d | sha256sum", podIP, size))
	if want := fmt.Sprintf("%x", sha256.Sum256([]byte(strings.Repeat("GTUN-CLEARTEXT-MARKER-", size/22+1)[:size]))); err != nil || !strings.HasPrefix(out, want) {
		t.Errorf("download of %d MiB during the key updates: %v, sha256 %q, want %s", size>>20, err, out, want)
	}
	res := run.result(t, (seconds+30)*time.Second)
	end := keyStatus(t, e)
	t.Logf("REKEY 1s over %s, iperf3 --bidir %d s at %sbit/s each way: vm->pod %.0f Mbit/s, pod->vm %.0f Mbit/s; key updates gtun sent/received %d/%d, gtund %d/%d",
		transport, seconds, rate, res.received*8/seconds/1e6, res.reverseReceived*8/seconds/1e6,
		end.client.Rekeys.Sent, end.client.Rekeys.Received, end.server.Rekeys.Sent, end.server.Rekeys.Received)

	if res.stalled > 0 || res.reverseStalled > 0 || res.reverseReceived <= 0 {
		t.Errorf("iperf3: %d seconds without data vm->pod, %d pod->vm; %.0f bytes pod->vm", res.stalled, res.reverseStalled, res.reverseReceived)
	}
	c, s := end.client, end.server
	if c.State != "connected" || c.Reconnects != 0 || s.Sessions != 1 {
		t.Errorf("gtun %s with %d reconnects, gtund counts %d sessions: want one session throughout", c.State, c.Reconnects, s.Sessions)
	}
	if c.QueueDrops != 0 || len(s.Drops) != 0 || len(end.drops) != 0 {
		t.Errorf("drops: gtun queue %d, gtund peer %v, gtund %v", c.QueueDrops, s.Drops, end.drops)
	}
	// One update a second each way during the run (keepalives carry them
	// outside it), each seen by the other side.
	for _, side := range []struct {
		name         string
		mid, end     uint64
		peerReceived uint64
		keyAge       time.Duration
	}{
		{"gtun", mid.client.Rekeys.Sent, c.Rekeys.Sent, s.Rekeys.Received, c.KeyAge},
		{"gtund", mid.server.Rekeys.Sent, s.Rekeys.Sent, c.Rekeys.Received, s.KeyAge},
	} {
		if side.end < side.mid+seconds-5 || side.mid < 3 {
			t.Errorf("%s sent %d key updates by mid-run and %d at the end, want them to grow by one a second", side.name, side.mid, side.end)
		}
		// The two status calls are a moment apart: one update may fall between.
		if side.peerReceived+1 < side.end || side.peerReceived > side.end+1 {
			t.Errorf("%s sent %d key updates, its peer received %d", side.name, side.end, side.peerReceived)
		}
		if side.keyAge <= 0 || side.keyAge > 2500*time.Millisecond {
			t.Errorf("%s's send key is %v old with rekey_interval 1s and keepalive 1s", side.name, side.keyAge)
		}
	}

	// The same in the metrics.
	sm, err := e.scrape("gw", "127.0.0.1:9624")
	if err != nil {
		t.Fatal(err)
	}
	cm, err := e.scrape("vm", "127.0.0.1:9625")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		name string
		got  float64
		min  uint64
	}{
		{"gtund_peer_rekeys_total{sent}", sm.must(t, "gtund_peer_rekeys_total", "direction=sent,peer=vm"), s.Rekeys.Sent},
		{"gtund_peer_rekeys_total{received}", sm.must(t, "gtund_peer_rekeys_total", "direction=received,peer=vm"), s.Rekeys.Received},
		{"gtun_server_rekeys_total{sent}", cm.must(t, "gtun_server_rekeys_total", "direction=sent,server=cluster"), c.Rekeys.Sent},
		{"gtun_server_rekeys_total{received}", cm.must(t, "gtun_server_rekeys_total", "direction=received,server=cluster"), c.Rekeys.Received},
	} {
		if m.got < float64(m.min) || m.got > float64(m.min)+5 {
			t.Errorf("%s = %v, status said %d a moment before", m.name, m.got, m.min)
		}
	}
	for name, age := range map[string]float64{
		"gtund_peer_key_age_seconds":  sm.must(t, "gtund_peer_key_age_seconds", "peer=vm"),
		"gtun_server_key_age_seconds": cm.must(t, "gtun_server_key_age_seconds", "server=cluster"),
	} {
		if age <= 0 || age > 2.5 {
			t.Errorf("%s = %v", name, age)
		}
	}
}

// A reload that changes rekey_interval applies to the running session on
// both sides (gtund's own send key, and the client's through the pushed
// config), without a reconnect.
func TestRekeyIntervalReload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	scfg := e.serverConfig(t, peer{name: "vm", pub: cpub})
	srv := e.startServer(t, scfg)
	cli := e.startClient(t, "vm", "vm", e.clientConfig(t, "vm", ckey, e.serverPub))
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	time.Sleep(3 * time.Second) // keepalives each second, keys 2 minutes
	if st := keyStatus(t, e); st.client.Rekeys != (session.Rekeys{}) || st.server.Rekeys != (session.Rekeys{}) {
		t.Fatalf("key updates with the default interval after 3 s: gtun %+v, gtund %+v", st.client.Rekeys, st.server.Rekeys)
	}

	insertAfter(t, scfg, "keepalive", `rekey_interval = "1s"`)
	hup(t, "gtund", srv)
	testnet.Eventually(t, 10*time.Second, func() error {
		st := keyStatus(t, e)
		if st.client.Rekeys.Sent < 3 || st.server.Rekeys.Sent < 3 {
			return fmt.Errorf("key updates after the reload: gtun %+v, gtund %+v", st.client.Rekeys, st.server.Rekeys)
		}
		return nil
	})
	if st := keyStatus(t, e); st.client.Reconnects != 0 || st.server.Sessions != 1 {
		t.Fatalf("the reload cost a reconnect: gtun %d, gtund %d sessions", st.client.Reconnects, st.server.Sessions)
	}
}
