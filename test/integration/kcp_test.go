package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/client"
	"github.com/gtun/gtun/pkg/server"
)

// rewrite applies string replacements to a config file.
func rewrite(t *testing.T, path string, pairs ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("%s has no %q", path, pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitState polls gtun's status until match accepts the server's entry.
func (e *env) waitState(t *testing.T, name string, limit time.Duration, what string, match func(client.ServerStatus) bool) time.Duration {
	t.Helper()
	start := time.Now()
	var last client.ServerStatus
	for time.Since(start) < limit {
		var st client.Status
		if tryStatus(bins.gtun, e.clientSocket(name), &st) == nil && len(st.Servers) > 0 {
			last = st.Servers[0]
			if match(last) {
				return time.Since(start)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("not %s within %v; last status %+v", what, limit, last)
	return 0
}

func TestKCPTransport(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.kcpClient(t)
	out, err := e.tp.Exec("vm", "curl", "-fsS", "--max-time", "20", "-o", "/dev/null", "-w", "%{size_download}", "http://"+podIP+":8080/bytes?n=8000000")
	if err != nil || out != "8000000" {
		t.Fatalf("download over kcp: %v %q", err, out)
	}
	if out, err := e.curl("vm", "http://"+clusterIP+"/"); err != nil || !strings.Contains(out, "hello from pod") {
		t.Fatalf("ClusterIP over kcp: %v %q", err, out)
	}
	var st client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &st)
	if st.Servers[0].Transport != "kcp" {
		t.Fatalf("transport in status: %q", st.Servers[0].Transport)
	}
}

// transport = "auto": with UDP blocked, gtun falls back to tcp within a few
// seconds; when UDP returns, it moves back to udp by itself.
func TestAutoFallsBackToTCPAndReturnsToUDP(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	scfg := e.serverConfig(t, peer{name: "vm", pub: cpub})
	rewrite(t, scfg, `transports = ["tcp"]`, `transports = ["tcp", "udp"]`)
	ccfg := e.clientConfig(t, "vm", ckey, e.serverPub)
	rewrite(t, ccfg, `transport = "tcp"`, "transport = \"auto\"\nfailback_interval = \"1s\"")
	e.tp.MustExec(t, "gw", "nft", "add", "table", "inet", "blockudp")
	e.tp.MustExec(t, "gw", "nft", "add", "chain", "inet", "blockudp", "in", "{ type filter hook input priority -10 ; }")
	e.tp.MustExec(t, "gw", "nft", "add", "rule", "inet", "blockudp", "in", "udp", "dport", port, "drop")
	e.startServer(t, scfg)
	start := time.Now()
	e.startClient(t, "vm", "vm", ccfg)
	e.waitState(t, "vm", 15*time.Second, "connected over tcp", func(s client.ServerStatus) bool {
		return s.State == "connected" && s.Transport == "tcp (auto)"
	})
	t.Logf("AUTO udp blocked: connected over tcp %v after start", time.Since(start).Round(time.Millisecond))
	// Connected is the session; its routes follow the pushed config a
	// moment later.
	e.reach(t, "vm", "http://"+clusterIP+"/", 5*time.Second)
	e.tp.MustExec(t, "gw", "nft", "delete", "table", "inet", "blockudp")
	d := e.waitState(t, "vm", 15*time.Second, "back on udp", func(s client.ServerStatus) bool {
		return s.State == "connected" && s.Transport == "udp (auto)"
	})
	t.Logf("AUTO udp unblocked: moved to udp %v later (failback_interval 1s)", d.Round(time.Millisecond))
	e.reach(t, "vm", "http://"+podIP+":8080/", 5*time.Second)
}

// Two gtund instances on two wan addresses: gtun uses the first, fails over
// to the second when the first dies, and moves back when it returns. An
// unreachable first endpoint costs only a few seconds.
func TestEndpointFailoverAndFailback(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tp.MustExec(t, "gw", "ip", "addr", "add", "198.51.100.3/24", "dev", "wan0")
	ckey, cpub := e.key(t, "vm")
	cfgA := e.serverConfig(t, peer{name: "vm", pub: cpub})
	b, _ := os.ReadFile(cfgA)
	cfgB := filepath.Join(e.dir, "gtund-b.toml")
	sB := strings.NewReplacer(gwWAN+":"+port, "198.51.100.3:"+port, `tun = "gtund0"`, `tun = "gtund1"`,
		"100.64.240.0/24", "100.64.241.0/24", filepath.Join(e.dir, "state"), filepath.Join(e.dir, "state-b"),
		e.serverSocket(), filepath.Join(e.dir, "gtund-b.sock")).Replace(string(b))
	os.WriteFile(cfgB, []byte(sB), 0o600)
	srvA := e.startServer(t, cfgA)
	e.tp.Start(t, "gw", filepath.Join(e.dir, "gtund-b.log"), bins.gtund, "-c", cfgB)
	testnet.Eventually(t, 10*time.Second, func() error {
		var st map[string]any
		return tryStatus(bins.gtund, filepath.Join(e.dir, "gtund-b.sock"), &st)
	})

	ccfg := e.clientConfig(t, "vm", ckey, e.serverPub)
	rewrite(t, ccfg, `endpoints = ["`+gwWAN+`:`+port+`"]`, `endpoints = ["`+gwWAN+`:`+port+`", "198.51.100.3:`+port+`"]`,
		`transport = "tcp"`, "transport = \"tcp\"\nfailback_interval = \"1s\"")
	// Both gtund serve with the same key, as one cluster's gateways would.
	e.startClient(t, "vm", "vm", ccfg)
	e.waitState(t, "vm", 10*time.Second, "on the first endpoint", func(s client.ServerStatus) bool {
		return s.State == "connected" && s.Endpoint == gwWAN+":"+port
	})

	srvA.Kill9()
	d := e.waitState(t, "vm", 15*time.Second, "failed over", func(s client.ServerStatus) bool {
		return s.State == "connected" && s.Endpoint == "198.51.100.3:"+port
	})
	t.Logf("FAILOVER first gtund killed: on the second endpoint %v later (keepalive 1s x 3 to notice)", d.Round(time.Millisecond))
	e.reach(t, "vm", "http://"+clusterIP+"/", 5*time.Second)

	e.startServer(t, cfgA)
	d = e.waitState(t, "vm", 15*time.Second, "back on the first endpoint", func(s client.ServerStatus) bool {
		return s.State == "connected" && s.Endpoint == gwWAN+":"+port
	})
	t.Logf("FAILBACK first gtund back: moved back %v later (failback_interval 1s)", d.Round(time.Millisecond))
	e.reach(t, "vm", "http://"+podIP+":8080/", 5*time.Second)
}

func TestUnreachableFirstEndpointCostsSeconds(t *testing.T) {
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	e.startServer(t, e.serverConfig(t, peer{name: "vm", pub: cpub}))
	ccfg := e.clientConfig(t, "vm", ckey, e.serverPub)
	// 198.51.100.9 is on the wan subnet but nobody has it: no answer at all.
	rewrite(t, ccfg, `endpoints = ["`+gwWAN+`:`+port+`"]`, `endpoints = ["198.51.100.9:`+port+`", "`+gwWAN+`:`+port+`"]`)
	start := time.Now()
	e.startClient(t, "vm", "vm", ccfg)
	e.waitState(t, "vm", 10*time.Second, "connected via the second endpoint", func(s client.ServerStatus) bool {
		return s.State == "connected" && s.Endpoint == gwWAN+":"+port
	})
	d := time.Since(start)
	t.Logf("FAILOVER unreachable first endpoint: connected via the second %v after start", d.Round(time.Millisecond))
	if d > 6*time.Second {
		t.Errorf("an unreachable first endpoint cost %v", d)
	}
}

// wanLoss drops pct% of the packets in each direction on the wan link
// (nftables numgen; this kernel has no netem). 100 is a blackhole. Packets
// are dropped where they arrive, in vm and in gw: dropped on output, the
// sender's socket would see EPERM, which a real network never returns.
func (e *env) wanLoss(t *testing.T, pct int) {
	t.Helper()
	for _, h := range []string{"vm", "gw"} {
		_, _ = e.tp.Exec(h, "nft", "delete", "table", "inet", "wanloss")
		if pct == 0 {
			continue
		}
		match := fmt.Sprintf("numgen random mod 100 < %d", pct)
		if pct >= 100 {
			match = ""
		}
		rules := fmt.Sprintf(`table inet wanloss {
	chain in { type filter hook input priority -300; iifname "wan0" %s drop; }
}`, match)
		cmd := e.tp.Command(t.Context(), h, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft in %s: %v\n%s", h, err, out)
		}
	}
}

// kcpClient starts gtund with tcp and kcp and a gtun over kcp, and waits
// for its routes.
func (e *env) kcpClient(t *testing.T) {
	t.Helper()
	ckey, cpub := e.key(t, "vm")
	scfg := e.serverConfig(t, peer{name: "vm", pub: cpub})
	rewrite(t, scfg, `transports = ["tcp"]`, `transports = ["tcp", "kcp"]`)
	ccfg := e.clientConfig(t, "vm", ckey, e.serverPub)
	rewrite(t, ccfg, `transport = "tcp"`, `transport = "kcp"`)
	e.startServer(t, scfg)
	cli := e.startClient(t, "vm", "vm", ccfg)
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)
}

// At 5% loss each way the kcp session stays up and every request succeeds.
func TestKCPUnderFivePercentLoss(t *testing.T) {
	e := newEnv(t)
	e.kcpClient(t)
	e.wanLoss(t, 5)
	start := time.Now()
	for i := range 20 {
		out, err := e.tp.Exec("vm", "curl", "-fsS", "--max-time", "10", "-o", "/dev/null", "-w", "%{size_download}", "http://"+podIP+":8080/bytes?n=200000")
		if err != nil || out != "200000" {
			t.Fatalf("request %d/20 at 5%% loss: %v %q", i+1, err, out)
		}
	}
	t.Logf("KCP 5%% loss: 20/20 requests of 200 kB in %v", time.Since(start).Round(time.Millisecond))
	var st client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &st)
	if s := st.Servers[0]; s.State != "connected" || s.Reconnects != 0 {
		t.Fatalf("kcp session did not stay up at 5%% loss: %+v", s)
	}
}

// A 10 s blackhole on a kcp session: declared dead by keepalive, and back
// when the wan is.
func TestKCPRecoversFromBlackhole(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.kcpClient(t)
	e.wanLoss(t, 100)
	e.waitState(t, "vm", 10*time.Second, "declared dead", func(s client.ServerStatus) bool { return s.State != "connected" })
	time.Sleep(10 * time.Second) // the rest of the blackhole
	e.wanLoss(t, 0)
	d := e.waitState(t, "vm", 10*time.Second, "reconnected over kcp", func(s client.ServerStatus) bool {
		return s.State == "connected" && s.Transport == "kcp"
	})
	t.Logf("KCP 10 s blackhole: reconnected %v after the wan returned", d.Round(time.Millisecond))
	e.reach(t, "vm", "http://"+clusterIP+"/", 5*time.Second)
}

// kcp's FEC must be the same on both ends: a client without it, to a
// gtund with fec_data/fec_parity 10/3, is refused after the handshake with
// the reason in words (in gtun's status), not with silence.
func TestKCPFECMismatchInWords(t *testing.T) {
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	scfg := e.serverConfig(t, peer{name: "vm", pub: cpub})
	rewrite(t, scfg, `transports = ["tcp"]`, "transports = [\"tcp\", \"kcp\"]\nfec_data = 10\nfec_parity = 3")
	ccfg := e.clientConfig(t, "vm", ckey, e.serverPub)
	rewrite(t, ccfg, `transport = "tcp"`, `transport = "kcp"`)
	srv := e.startServer(t, scfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gtund log:\n%s", srv.LogTail(40))
		}
	})
	e.startClient(t, "vm", "vm", ccfg)
	e.waitState(t, "vm", 15*time.Second, "refused for the FEC mismatch", func(s client.ServerStatus) bool {
		return strings.Contains(s.LastError, "fec_data/fec_parity mismatch: client 0/0, server 10/3")
	})
	var st server.Status
	status(t, bins.gtund, e.serverSocket(), &st)
	if st.HandshakeFailures["fec_mismatch"] == 0 {
		t.Errorf("gtund did not count the mismatch: %v", st.HandshakeFailures)
	}
}
