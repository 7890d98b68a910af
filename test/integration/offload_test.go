package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/gtun/gtun/pkg/client"
	"github.com/gtun/gtun/pkg/server"
)

// One side with TUN offloads, the other on the plain path: the plain side
// finishes the offloaded super-packets itself (segmentation, checksums).
// A bulk transfer both ways proves it, and status reports each mode.
func TestMixedOffloadAndPlainPath(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ serverOffload, clientOffload bool }{{false, true}, {true, false}} {
		t.Run(fmt.Sprintf("server_offload=%v/client_offload=%v", c.serverOffload, c.clientOffload), func(t *testing.T) {
			e := newEnv(t)
			ckey, cpub := e.key(t, "vm")
			scfg := e.serverConfig(t, peer{name: "vm", pub: cpub})
			ccfg := e.clientConfig(t, "vm", ckey, e.serverPub)
			set := func(path, section string, on bool) {
				b, _ := os.ReadFile(path)
				s := strings.Replace(string(b), "["+section+"]\n", fmt.Sprintf("[%s]\noffload = %v\n", section, on), 1)
				os.WriteFile(path, []byte(s), 0o600)
			}
			set(scfg, "server", c.serverOffload)
			set(ccfg, "client", c.clientOffload)
			e.startServer(t, scfg)
			cli := e.startClient(t, "vm", "vm", ccfg)
			e.waitRoute(t, "vm", "10.244.0.0/16", cli)
			// 8 MB down (pod -> vm) and up (vm -> pod), checked byte for byte by size.
			out, err := e.tp.Exec("vm", "curl", "-fsS", "--max-time", "20", "-o", "/dev/null", "-w", "%{size_download}", "http://"+podIP+":8080/bytes?n=8000000")
			if err != nil || out != "8000000" {
				t.Fatalf("download: %v %q", err, out)
			}
			out, err = e.tp.Exec("vm", "bash", "-c", "head -c 8000000 /dev/urandom | curl -fsS --max-time 20 --data-binary @- http://"+podIP+":8080/sink")
			if err != nil || strings.TrimSpace(out) != "8000000" {
				t.Fatalf("upload: %v %q", err, out)
			}
			var cst client.Status
			status(t, bins.gtun, e.clientSocket("vm"), &cst)
			var sst server.Status
			status(t, bins.gtund, e.serverSocket(), &sst)
			if cst.Offload != c.clientOffload || sst.Offload != c.serverOffload {
				t.Errorf("status offload: client %v server %v, want %v %v", cst.Offload, sst.Offload, c.clientOffload, c.serverOffload)
			}
			if cst.Servers[0].Cipher == "" || sst.Peers[0].Cipher != cst.Servers[0].Cipher {
				t.Errorf("cipher: client %q server %q", cst.Servers[0].Cipher, sst.Peers[0].Cipher)
			}
		})
	}
}
