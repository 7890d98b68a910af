package main

// profgtund is a diagnostic: gtund itself (config.LoadServer, server.New,
// Run: TUN, NAT, leases, sessions), run inside loadgen so that its memory
// can be profiled. Needs what gtund needs (root). Each SIGUSR1 prints the
// process's memory (RSS, heap in use, live heap after a GC, goroutine
// stacks, goroutines) to stderr and writes PREFIX.N.pprof (heap, live
// objects) and PREFIX.N.goroutines.txt. It does not free memory to the OS,
// so the RSS printed at the next signal is still gtund's own.
//
//	loadgen profgtund -c gtund.toml -profile /tmp/gtund-heap
//	kill -USR1 PID    # baseline, then again with all sessions idle
//	go tool pprof -sample_index=inuse_space -top -base /tmp/gtund-heap.1.pprof /tmp/gtund-heap.2.pprof

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/server"
)

func profgtundMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen profgtund", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "gtund config")
	prefix := fs.String("profile", "/tmp/gtund-heap", "profile file prefix")
	rate := fs.Int("memprofilerate", 512, "runtime.MemProfileRate (bytes per sample)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: loadgen profgtund -c gtund.toml [-profile PREFIX]")
		return 2
	}
	runtime.MemProfileRate = *rate
	if os.Getenv("GOMAXPROCS") == "" { // as gtund
		runtime.GOMAXPROCS(max(1, runtime.NumCPU()/2))
	}
	cfg, err := config.LoadServer(*path)
	if err != nil {
		fmt.Fprintf(stderr, "profgtund: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for seq := 1; ; seq++ {
			select {
			case <-usr1:
			case <-ctx.Done():
				return
			}
			asIs := snapMem()
			runtime.GC()
			live := snapMem()
			fmt.Fprintf(stderr, "profgtund #%d: RSS %d KiB, heap in use %d KiB, live heap %d KiB, stacks %d KiB, sys %d KiB, %d goroutines\n",
				seq, asIs.RSSKiB, asIs.HeapInuse>>10, live.HeapAlloc>>10, live.StackInuse>>10, live.Sys>>10, live.Goroutines)
			if f, err := os.Create(fmt.Sprintf("%s.%d.pprof", *prefix, seq)); err == nil {
				_ = pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
			if f, err := os.Create(fmt.Sprintf("%s.%d.goroutines.txt", *prefix, seq)); err == nil {
				_ = pprof.Lookup("goroutine").WriteTo(f, 1)
				f.Close()
			}
		}
	}()
	reload := make(chan struct{})
	if err := server.New(cfg, cfg.Log.Logger()).Run(ctx, reload); err != nil {
		fmt.Fprintf(stderr, "profgtund: %v\n", err)
		return 1
	}
	return 0
}
