package main

// memserver is a diagnostic: gtund's per-session path (transport, Noise
// responder, session.Accept, config, Run) without TUN, NAT or leases, in a
// process of its own, so that the memory one idle session costs the server
// can be measured and profiled without root:
//
//	loadgen memserver -keys keys.txt -n 1000 -heapprofile heap.pprof &
//	  (prints "ADDR PUBKEY" on its first line)
//	loadgen -server ADDR -server-key PUBKEY -keys keys.txt -n 1000 -idle-first 20s -hold 0s
//
// Once n sessions are up and -idle has passed it prints the process's
// memory per session (RSS, heap, goroutine stacks, goroutines) and writes a
// heap profile (go tool pprof -sample_index=inuse_space -top).

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/session"
	"github.com/gtun/gtun/pkg/transport"
)

type memSnap struct {
	RSSKiB     uint64
	HeapInuse  uint64
	HeapAlloc  uint64
	StackInuse uint64
	Sys        uint64
	Goroutines int
}

func snapMem() memSnap {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m, _ := readMem(os.Getpid())
	return memSnap{RSSKiB: m.RSSKiB, HeapInuse: ms.HeapInuse, HeapAlloc: ms.HeapAlloc, StackInuse: ms.StackInuse,
		Sys: ms.Sys, Goroutines: runtime.NumGoroutine()}
}

func memserverMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen memserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "listen address (tcp)")
	keysPath := fs.String("keys", "", "client private keys (loadgen genkeys); their public keys are the peers")
	n := fs.Int("n", 1000, "report once this many sessions are up")
	idle := fs.Duration("idle", 10*time.Second, "then wait this long before measuring")
	heapProfile := fs.String("heapprofile", "", "write a heap profile here (live objects, after a GC)")
	procs := fs.Int("procs", max(1, runtime.NumCPU()/2), "GOMAXPROCS (gtund's default: half the CPUs)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *keysPath == "" || *n <= 0 || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: loadgen memserver -keys FILE [-n N] [-idle D] [-heapprofile FILE] [-listen ADDR]")
		return 2
	}
	runtime.GOMAXPROCS(*procs)
	runtime.MemProfileRate = 512
	keys, err := loadKeys(*keysPath)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen memserver: %v\n", err)
		return 2
	}
	peers := map[secure.PublicKey]int{}
	for i, k := range keys {
		peers[k.Public()] = i
	}
	sk, err := secure.GeneratePrivateKey()
	if err != nil {
		fmt.Fprintf(stderr, "loadgen memserver: %v\n", err)
		return 1
	}
	ln, err := transport.ListenTCP(*listen)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen memserver: %v\n", err)
		return 1
	}
	defer ln.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	runtime.GC()
	debug.FreeOSMemory()
	base := snapMem()
	fmt.Fprintf(stdout, "%s %s\n", ln.Addr(), sk.Public())
	if f, ok := stdout.(*os.File); ok {
		_ = f.Sync()
	}

	var mu sync.Mutex
	lastTS := map[secure.PublicKey]uint64{}
	authorize := func(k secure.PublicKey, ts uint64) error {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := peers[k]; !ok {
			return secure.ErrUnknownPeer
		}
		if ts <= lastTS[k] {
			return secure.ErrReplay
		}
		lastTS[k] = ts
		return nil
	}
	responder := secure.NewResponder(secure.ServerConfig{Private: sk, Authorize: authorize})
	var up atomic.Int64
	ready := make(chan struct{})
	var readyOnce sync.Once
	var rx atomic.Uint64
	var wg sync.WaitGroup
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { // as gtund's serveConn, minus leases, TUN and logging
				defer wg.Done()
				stopClose := context.AfterFunc(ctx, func() { raw.Close() })
				defer stopClose()
				sc, key, err := responder.Accept(raw, time.Now().Add(secure.DefaultHandshakeTimeout))
				if err != nil {
					raw.Close()
					return
				}
				sess, _, err := session.Accept(sc, 0, nil)
				if err != nil {
					return
				}
				idx := peers[key]
				addr := netip.AddrFrom4([4]byte{100, 64, byte((idx + 2) >> 8), byte(idx + 2)})
				sess.SetKeepalive(session.DefaultKeepalive, session.DefaultDeadAfter)
				if err := sess.SendControl(&session.Msg{Type: session.TypeConfig, Version: secure.ProtocolVersion,
					Address: netip.PrefixFrom(addr, 20).String(), Gateway: "100.64.0.1", MTU: 1400, Routes: []string{"10.244.0.0/16"},
					KeepaliveMS: int(session.DefaultKeepalive / time.Millisecond), DeadAfter: session.DefaultDeadAfter}); err != nil {
					sess.Close()
					return
				}
				if up.Add(1) == int64(*n) {
					readyOnce.Do(func() { close(ready) })
				}
				_ = sess.Run(ctx, session.Handlers{Packet: func([]byte) { rx.Add(1) }})
				up.Add(-1)
			}()
		}
	}()

	select {
	case <-ready:
	case <-ctx.Done():
		return 1
	}
	fmt.Fprintf(stderr, "memserver: %d sessions up; idle %s\n", *n, *idle)
	select {
	case <-time.After(*idle):
	case <-ctx.Done():
		return 1
	}
	if got := up.Load(); got != int64(*n) {
		fmt.Fprintf(stderr, "memserver: only %d of %d sessions still up\n", got, *n)
	}
	idleSnap := snapMem()
	runtime.GC()
	live := snapMem()
	debug.FreeOSMemory()
	freed := snapMem()
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(*n) / 1024 }
	var sb strings.Builder
	fmt.Fprintf(&sb, "memserver: %d idle sessions, per session (KiB):\n", *n)
	fmt.Fprintf(&sb, "  RSS as is                 %7.1f\n", per(idleSnap.RSSKiB*1024, base.RSSKiB*1024))
	fmt.Fprintf(&sb, "  RSS after GC+FreeOSMemory %7.1f\n", per(freed.RSSKiB*1024, base.RSSKiB*1024))
	fmt.Fprintf(&sb, "  heap in use (as is)       %7.1f\n", per(idleSnap.HeapInuse, base.HeapInuse))
	fmt.Fprintf(&sb, "  heap live (after GC)      %7.1f\n", per(live.HeapAlloc, base.HeapAlloc))
	fmt.Fprintf(&sb, "  goroutine stacks          %7.1f\n", per(live.StackInuse, base.StackInuse))
	fmt.Fprintf(&sb, "  goroutines per session    %7.2f\n", float64(live.Goroutines-base.Goroutines)/float64(*n))
	fmt.Fprintf(&sb, "  (packets received: %d)\n", rx.Load())
	fmt.Fprint(stdout, sb.String())
	if *heapProfile != "" {
		f, err := os.Create(*heapProfile)
		if err == nil {
			err = pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
		if err != nil {
			fmt.Fprintf(stderr, "memserver: heap profile: %v\n", err)
		}
	}
	if *heapProfile != "" {
		if f, err := os.Create(*heapProfile + ".goroutines.txt"); err == nil {
			_ = pprof.Lookup("goroutine").WriteTo(f, 1)
			f.Close()
		}
	}
	stop()
	ln.Close()
	wg.Wait()
	return 0
}
