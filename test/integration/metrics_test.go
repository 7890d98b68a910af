package integration

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/packet"
	"github.com/gtun/gtun/pkg/secure"
)

// scrape fetches http://addr/metrics with curl inside host's namespace and
// parses the answer with Prometheus' exposition-format parser.
func (e *env) scrape(host, addr string) (metricSet, error) {
	out, err := e.tp.Exec(host, "curl", "-fsS", "--max-time", "5", "http://"+addr+"/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape %s in %s: %v %s", addr, host, err, out)
	}
	// Legacy name validation: gtun's names must also scrape into a Prometheus
	// older than UTF-8 names (a zero TextParser panics since common v0.6x).
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(out))
	if err != nil {
		return nil, fmt.Errorf("parse metrics of %s: %v", host, err)
	}
	return metricSet(fams), nil
}

type metricSet map[string]*dto.MetricFamily

// get is the value of name with exactly these labels ("k=v,k=v"), and
// whether it exists.
func (m metricSet) get(name, labels string) (float64, bool) {
	f := m[name]
	for _, s := range f.GetMetric() {
		var ls []string
		for _, l := range s.Label {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		if strings.Join(ls, ",") == labels {
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return s.Counter.GetValue(), true
			case dto.MetricType_GAUGE:
				return s.Gauge.GetValue(), true
			}
		}
	}
	return 0, false
}

func (m metricSet) must(t *testing.T, name, labels string) float64 {
	t.Helper()
	v, ok := m.get(name, labels)
	if !ok {
		t.Fatalf("no %s{%s}", name, labels)
	}
	return v
}

// insertAfter adds line after the first line of the file at path that
// starts with prefix.
func insertAfter(t *testing.T, path, prefix, line string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			lines = append(lines[:i+1], append([]string{line}, lines[i+1:]...)...)
			if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("%s has no line starting with %q", path, prefix)
}

// Both daemons serve Prometheus metrics on metrics_listen: traffic, sessions,
// RTT, routes, drops and refused handshakes, scraped over HTTP from the
// namespaces the daemons run in and parsed as Prometheus would; counters
// survive a reconnect; the endpoints go away with the daemons.
func TestMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	rkey, rpub := e.key(t, "raw")
	_, apub := e.key(t, "absent")
	acl := `allowed = ["10.244.0.0/16"]`
	scfg := e.serverConfig(t, peer{name: "vm", pub: cpub}, peer{name: "raw", pub: rpub, extra: acl}, peer{name: "absent", pub: apub})
	insertAfter(t, scfg, "keepalive", `metrics_listen = "127.0.0.1:9624"`)
	ccfg := e.clientConfig(t, "vm", ckey, e.serverPub)
	insertAfter(t, ccfg, "control_socket", `metrics_listen = "127.0.0.1:9625"`)
	srv := e.startServer(t, scfg)
	cli := e.startClient(t, "vm", "vm", ccfg)
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	e.waitRoute(t, "vm", "10.96.0.0/12", cli)
	e.reach(t, "vm", "http://"+podIP+":8080/", 10*time.Second)

	// Known traffic: 2 MB down, 1 MB up.
	const down, up = 2_000_000, 1_000_000
	if out, err := e.tp.Exec("vm", "curl", "-fsS", "--max-time", "20", "-o", "/dev/null", fmt.Sprintf("http://%s:8080/bytes?n=%d", podIP, down)); err != nil {
		t.Fatalf("download: %v %s", err, out)
	}
	upload := filepath.Join(e.dir, "upload")
	if err := os.WriteFile(upload, make([]byte, up), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := e.tp.Exec("vm", "curl", "-fsS", "--max-time", "20", "--data-binary", "@"+upload, "http://"+podIP+":8080/sink"); err != nil ||
		strings.TrimSpace(out) != fmt.Sprint(up) {
		t.Fatalf("upload: %v %q", err, out)
	}
	// A drop by ACL (a modified client sending outside its allowed routes)
	// and a handshake refused (an unknown key).
	raw := dialSession(t, e, "vm", rkey)
	pkt := udpPacket(raw.addr, netip.MustParseAddr(clusterIP), []byte("not allowed"))
	b := packet.Get()
	clear(b.B[:packet.VnetHdrLen])
	b.N = packet.VnetHdrLen + copy(b.B[packet.VnetHdrLen:], pkt)
	raw.sess.Enqueue(b)
	stranger, _ := secure.GeneratePrivateKey()
	serverPub, _ := secure.ParsePublicKey(e.serverPub)
	conn := dialInNS(t, e.tp.NS("vm"), gwWAN+":"+port)
	if _, err := secure.Client(conn, secure.ClientConfig{Private: stranger, ServerKey: serverPub, Timeout: 5 * time.Second}); err == nil {
		t.Fatal("an unknown key completed the handshake")
	}
	conn.Close()

	// gtund, scraped inside gw.
	var sm metricSet
	testnet.Eventually(t, 10*time.Second, func() error {
		var err error
		if sm, err = e.scrape("gw", "127.0.0.1:9624"); err != nil {
			return err
		}
		if v, _ := sm.get("gtund_peer_drops_total", "peer=raw,reason=acl"); v < 1 {
			return fmt.Errorf("acl drop of raw not counted yet (%v)", v)
		}
		if v, _ := sm.get("gtund_handshake_failures_total", "reason=unknown_peer"); v < 1 {
			return fmt.Errorf("unknown key not counted yet (%v)", v)
		}
		if v, _ := sm.get("gtund_peer_rtt_seconds", "peer=vm"); v <= 0 {
			return fmt.Errorf("no rtt for vm yet (%v)", v)
		}
		return nil
	})
	if v := sm.must(t, "gtund_peer_rx_bytes_total", "peer=vm"); v < up {
		t.Errorf("gtund_peer_rx_bytes_total{vm} = %v, want >= %d uploaded", v, up)
	}
	if v := sm.must(t, "gtund_peer_tx_bytes_total", "peer=vm"); v < down {
		t.Errorf("gtund_peer_tx_bytes_total{vm} = %v, want >= %d downloaded", v, down)
	}
	for _, n := range []string{"gtund_peer_rx_packets_total", "gtund_peer_tx_packets_total"} {
		if v := sm.must(t, n, "peer=vm"); v < 10 {
			t.Errorf("%s{vm} = %v", n, v)
		}
	}
	if v := sm.must(t, "gtund_peer_rtt_seconds", "peer=vm"); v > 1 {
		t.Errorf("rtt of vm %v s on a local link", v)
	}
	checks := []struct {
		name, labels string
		want         float64
	}{
		{"gtund_sessions", "", 2}, // vm and raw
		{"gtund_peers", "", 3},
		{"gtund_routes", "", 2},
		{"gtund_peer_connected", "peer=vm", 1},
		{"gtund_peer_connected", "peer=absent", 0},
		{"gtund_peer_sessions_total", "peer=vm", 1},
		{"gtund_peer_sessions_total", "peer=absent", 0},
		{"gtund_peer_drops_total", "peer=vm,reason=acl", 0},
		{"gtund_drops_total", "reason=queue_full", 0},
	}
	for _, c := range checks {
		if v := sm.must(t, c.name, c.labels); v != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
	if v := sm.must(t, "gtund_drops_total", "reason=acl"); v < 1 {
		t.Errorf("gtund_drops_total{acl} = %v", v)
	}
	if sm["process_resident_memory_bytes"] == nil || sm["go_goroutines"] == nil {
		t.Error("no process or Go metrics")
	}
	if f := sm["gtund_peer_rx_bytes_total"]; f.GetType() != dto.MetricType_COUNTER || !strings.Contains(f.GetHelp(), "received from the peer") {
		t.Errorf("gtund_peer_rx_bytes_total: type %v help %q", f.GetType(), f.GetHelp())
	}

	// gtun, scraped inside vm.
	cm, err := e.scrape("vm", "127.0.0.1:9625")
	if err != nil {
		t.Fatal(err)
	}
	if v := cm.must(t, "gtun_server_rx_bytes_total", "server=cluster"); v < down {
		t.Errorf("gtun_server_rx_bytes_total = %v, want >= %d", v, down)
	}
	if v := cm.must(t, "gtun_server_tx_bytes_total", "server=cluster"); v < up {
		t.Errorf("gtun_server_tx_bytes_total = %v, want >= %d", v, up)
	}
	desired, installed := cm.must(t, "gtun_routes_desired", "server=cluster"), cm.must(t, "gtun_routes_installed", "server=cluster")
	if desired != 2 || installed != desired {
		t.Errorf("routes desired %v installed %v, want 2 and 2", desired, installed)
	}
	for _, c := range []struct {
		name, labels string
		want         float64
	}{
		{"gtun_server_connected", "server=cluster", 1},
		{"gtun_server_reconnects_total", "server=cluster", 0},
		{"gtun_heals_total", "kind=route", 0},
		{"gtun_heals_total", "kind=tun", 0},
		{"gtun_drops_total", "reason=queue_full", 0},
	} {
		if v := cm.must(t, c.name, c.labels); v != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
	if v := cm.must(t, "gtun_server_rtt_seconds", "server=cluster"); v <= 0 || v > 1 {
		t.Errorf("gtun_server_rtt_seconds = %v", v)
	}

	// A heal is counted; counters survive a reconnect (gtund restarted
	// sessions are counted per peer, gtun's totals carry over).
	e.tp.MustExec(t, "vm", "ip", "route", "del", "10.244.0.0/16")
	testnet.Eventually(t, 10*time.Second, func() error {
		m, err := e.scrape("vm", "127.0.0.1:9625")
		if err != nil {
			return err
		}
		if v, _ := m.get("gtun_heals_total", "kind=route"); v < 1 {
			return fmt.Errorf("route heal not counted (%v)", v)
		}
		return nil
	})
	rxBefore := sm.must(t, "gtund_peer_rx_bytes_total", "peer=vm")
	stop(t, "gtun", cli)
	cli = e.startClient(t, "vm", "vm", ccfg)
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
	testnet.Eventually(t, 10*time.Second, func() error {
		m, err := e.scrape("gw", "127.0.0.1:9624")
		if err != nil {
			return err
		}
		if v, _ := m.get("gtund_peer_sessions_total", "peer=vm"); v != 2 {
			return fmt.Errorf("gtund_peer_sessions_total{vm} = %v, want 2", v)
		}
		if v, _ := m.get("gtund_peer_rx_bytes_total", "peer=vm"); v < rxBefore {
			return fmt.Errorf("gtund_peer_rx_bytes_total{vm} went back from %v to %v", rxBefore, v)
		}
		return nil
	})

	stop(t, "gtun", cli)
	stop(t, "gtund", srv)
	for host, addr := range map[string]string{"gw": "127.0.0.1:9624", "vm": "127.0.0.1:9625"} {
		if _, err := e.scrape(host, addr); err == nil {
			t.Errorf("metrics still served in %s after the daemon stopped", host)
		}
	}
}
