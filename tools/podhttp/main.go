// Command podhttp is the tiny HTTP server that plays the pod in gtun's test
// topology.
//
//	podhttp -listen :8080 [-name cluster1]
//
// Endpoints:
//
//	/            "hello from pod\n"
//	/bytes?n=N   N bytes of the repeating pattern "GTUN-CLEARTEXT-MARKER-"
//	             (a capture on the wan link can grep for it: it must never
//	             appear there when traffic goes through the tunnel)
//	/healthz     "ok\n"
//	/name        the -name given ("pod" by default): which cluster answered
//	/whoami      the client's address as the pod sees it, then the name
//	             when -name is set ("10.0.0.2:40312 cluster2")
//
// It stops cleanly on SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// Marker is the cleartext pattern served by /bytes.
const Marker = "GTUN-CLEARTEXT-MARKER-"

const maxBytes = 1 << 34 // 16 GiB: enough for any test, bounded against typos

func main() {
	listen := flag.String("listen", ":8080", "address to listen on")
	name := flag.String("name", "", "name served by /name and /whoami (tells overlapping clusters apart)")
	flag.Parse()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("podhttp: %v", err)
	}
	srv := &http.Server{Handler: newMux(*name), ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Printf("podhttp: listening on %s", ln.Addr())

	select {
	case err := <-errc:
		log.Fatalf("podhttp: %v", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Printf("podhttp: shutdown: %v", err)
	}
	log.Printf("podhttp: stopped")
	os.Exit(0)
}

func newMux(name string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, "hello from pod\n")
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, "ok\n")
	})
	mux.HandleFunc("/bytes", serveBytes)
	// sink reads the request body and answers with its length (uploads).
	mux.HandleFunc("/sink", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, n)
	})
	// whoami shows the source address the pod sees (gtund's masquerade),
	// and which pod answered when two clusters share the pod's address.
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if name == "" {
			fmt.Fprintln(w, r.RemoteAddr)
			return
		}
		fmt.Fprintln(w, r.RemoteAddr, name)
	})
	mux.HandleFunc("/name", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if name == "" {
			fmt.Fprintln(w, "pod")
			return
		}
		fmt.Fprintln(w, name)
	})
	return mux
}

func serveBytes(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	if err != nil || n < 0 || n > maxBytes {
		http.Error(w, "n must be an integer in [0, 2^34]", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	if r.Method == http.MethodHead {
		return
	}
	// A buffer holding whole repetitions of the marker, so consecutive
	// writes continue the pattern seamlessly.
	const reps = 32 * 1024 / len(Marker)
	buf := make([]byte, 0, reps*len(Marker))
	for i := 0; i < reps; i++ {
		buf = append(buf, Marker...)
	}
	for n > 0 {
		chunk := buf
		if int64(len(chunk)) > n {
			chunk = chunk[:n]
		}
		if _, err := w.Write(chunk); err != nil {
			return
		}
		n -= int64(len(chunk))
	}
}
