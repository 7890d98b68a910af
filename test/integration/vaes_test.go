package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/client"
	"github.com/gtun/gtun/pkg/secure/vaesgcm"
)

// TestMixedAESImplementations runs gtund with the VAES AES-GCM
// (pkg/secure/vaesgcm) and gtun with crypto/cipher's (GTUN_NO_VAES=1), as
// when only one end's CPU has VAES: the records must open at both ends, in
// both directions and in large (offloaded, up to 64 KiB) records, and each
// daemon must log which implementation it runs.
func TestMixedAESImplementations(t *testing.T) {
	t.Parallel()
	// A missing CPU feature skips, with the reason logged, in CI too: no
	// setup step can add one. With the features, gtund must run the VAES
	// path (the log check below fails otherwise).
	if !vaesgcm.HasCPUFeatures() {
		t.Skip("skipped: this CPU cannot run the VAES path (VAES/VPCLMULQDQ/AVX-512, amd64 only)")
	}
	e := newEnv(t)
	ckey, cpub := e.key(t, "vm")
	srv := e.startServer(t, e.serverConfig(t, peer{name: "vm", pub: cpub}))
	cli := e.tp.Start(t, "vm", e.dir+"/vm.log", "env", "GTUN_NO_VAES=1", bins.gtun, "-c",
		e.clientConfig(t, "vm", ckey, e.serverPub))
	e.waitRoute(t, "vm", "10.244.0.0/16", cli)

	logged := func(p *testnet.Proc, what, impl string) {
		t.Helper()
		testnet.Eventually(t, 10*time.Second, func() error {
			l := p.Log()
			if strings.Contains(l, "aes="+impl) || strings.Contains(l, `"aes":"`+impl+`"`) {
				return nil
			}
			return fmt.Errorf("%s did not log aes=%s:\n%s", what, impl, p.LogTail(10))
		})
	}
	logged(srv, "gtund", "vaes-avx512")
	logged(cli, "gtun", "aes-ni")

	var cst client.Status
	status(t, bins.gtun, e.clientSocket("vm"), &cst)
	if len(cst.Servers) != 1 || cst.Servers[0].Cipher != "aes-128-gcm" {
		t.Fatalf("client status: %+v", cst)
	}

	// Download: gtund seals with VAES, gtun opens with crypto/cipher.
	const size = 8000000
	out, err := e.tp.Exec("vm", "sh", "-c",
		fmt.Sprintf("curl -fsS --max-time 30 http://%s:8080/bytes?n=%d | sha256sum", podIP, size))
	if err != nil {
		t.Fatalf("download through the tunnel: %v %s", err, out)
	}
	sum := sha256.Sum256([]byte(strings.Repeat("GTUN-CLEARTEXT-MARKER-", size/22+1)[:size]))
	if got := strings.Fields(out); len(got) == 0 || got[0] != hex.EncodeToString(sum[:]) {
		t.Fatalf("downloaded bytes differ: sha256 %q", out)
	}

	// Upload: gtun seals with crypto/cipher, gtund opens with VAES.
	out, err = e.tp.Exec("vm", "sh", "-c",
		fmt.Sprintf("head -c %d /dev/zero | curl -fsS --max-time 30 --data-binary @- http://%s:8080/sink", size, podIP))
	if err != nil || strings.TrimSpace(out) != fmt.Sprint(size) {
		t.Fatalf("upload through the tunnel: %v %q", err, out)
	}
	if cli.Exited() || srv.Exited() {
		t.Fatal("a daemon exited")
	}
}
