// Package cli is the command line shared by gtun and gtund: the thin mains
// only say which daemon they are.
package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"

	"github.com/BurntSushi/toml"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/control"
	"github.com/gtun/gtun/pkg/secure"
)

// Set at build time with -ldflags "-X github.com/gtun/gtun/pkg/cli.Version=...
// -X github.com/gtun/gtun/pkg/cli.Commit=..." (make build, make dist). Left
// empty, `version` falls back to what the go command recorded in the binary.
var (
	Version = ""
	Commit  = ""
)

// VersionInfo returns the version and commit this binary was built from:
// the -ldflags values when set; else what the go command recorded (a plain
// `go build` in a git checkout records a pseudo-version such as
// v0.0.0-20261121175211-2ee2e62abcde+dirty and the revision; `go install
// ...@v1.2.3` records v1.2.3); else "dev" and "unknown".
func VersionInfo() (version, commit string) {
	version, commit = Version, Commit
	if bi, ok := debug.ReadBuildInfo(); ok {
		if version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && commit == "" {
				commit = s.Value[:min(12, len(s.Value))]
			}
		}
	}
	if version == "" {
		version = "dev"
	}
	if commit == "" {
		commit = "unknown"
	}
	return version, commit
}

// Exit codes of both binaries.
const (
	ExitOK      = 0
	ExitRuntime = 1
	ExitUsage   = 2
)

// Daemon describes one of the two binaries.
type Daemon struct {
	Name          string // "gtun" or "gtund"
	DefaultConfig string
	Section       string // TOML table holding control_socket: "client" or "server"
	DefaultSocket string
	// Run loads the config at path and runs until ctx ends, reloading the
	// file whenever reload fires (SIGHUP). A config error at start must
	// satisfy config.IsConfigError so that the exit code is 2.
	Run func(ctx context.Context, path string, reload <-chan struct{}) error
	// PrintStatus renders the JSON status for humans.
	PrintStatus func(w io.Writer, raw json.RawMessage) error
	// Commands are subcommands only this binary has (gtund's "peer"):
	// each gets the arguments after its name and returns the exit code.
	Commands map[string]Command
}

// Command is a subcommand of one binary.
type Command struct {
	Usage string // lines for the usage text, without the binary's name
	Run   func(args []string) int
}

// Main runs the command line and returns the exit code.
func (d Daemon) Main(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "genkey":
			return d.genkey()
		case "pubkey":
			return d.pubkey(os.Stdin, os.Stdout)
		case "version", "--version":
			version, commit := VersionInfo()
			fmt.Printf("%s %s (commit %s, protocol %d)\n", d.Name, version, commit, secure.ProtocolVersion)
			return ExitOK
		case "status":
			return d.status(args[1:])
		case "help", "-h", "--help":
			d.usage(os.Stdout)
			return ExitOK
		case "run":
			args = args[1:]
		default:
			if c, ok := d.Commands[args[0]]; ok {
				return c.Run(args[1:])
			}
		}
	}
	fs := flag.NewFlagSet(d.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("c", d.DefaultConfig, "config file")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		if err == nil {
			err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", d.Name, err)
		d.usage(os.Stderr)
		return ExitUsage
	}
	return d.run(*path)
}

func (d Daemon) usage(w io.Writer) {
	fmt.Fprintf(w, `usage:
  %[1]s [-c FILE]             run in the foreground (default config %[2]s)
  %[1]s genkey                print a new private key
  %[1]s pubkey                read a private key on stdin, print its public key
  %[1]s status [--json] [-c FILE | --socket PATH]
  %[1]s version
`, d.Name, d.DefaultConfig)
	names := make([]string, 0, len(d.Commands))
	for n := range d.Commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, line := range strings.Split(strings.TrimSpace(d.Commands[n].Usage), "\n") {
			fmt.Fprintf(w, "  %s %s\n", d.Name, strings.TrimSpace(line))
		}
	}
}

func (d Daemon) run(path string) int {
	// The kernel's network stack does at least as much work per packet as
	// the daemon (TUN, TCP, forwarding, NAT), in softirq context on the same
	// CPUs. Go's scheduler, given every CPU, keeps idle threads spinning for
	// work between packets and takes CPU from it: on the 2-core bench
	// machine one P instead of two gives 15-25% more throughput. So half
	// the CPUs, unless the operator sets GOMAXPROCS.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(max(1, runtime.NumCPU()/2))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP is caught from the start (its default action would kill the
	// daemon) and coalesced: a reload asked for during a reload runs once more.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-hup:
				select {
				case reload <- struct{}{}:
				default:
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	// A CPU profile for performance work: GTUN_CPUPROFILE=/tmp/gtun.pprof.
	if p := os.Getenv("GTUN_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
		}
	}
	err := d.Run(ctx, path, reload)
	switch {
	case err == nil:
		return ExitOK
	case config.IsConfigError(err):
		fmt.Fprintf(os.Stderr, "%s: bad config:\n%v\n", d.Name, indent(err.Error()))
		return ExitUsage
	default:
		fmt.Fprintf(os.Stderr, "%s: %v\n", d.Name, err)
		return ExitRuntime
	}
}

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }

func (d Daemon) genkey() int {
	k, err := secure.GeneratePrivateKey()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s genkey: %v\n", d.Name, err)
		return ExitRuntime
	}
	fmt.Println(k.Encode())
	return ExitOK
}

func (d Daemon) pubkey(in io.Reader, out io.Writer) int {
	line, err := bufio.NewReader(io.LimitReader(in, 1024)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintf(os.Stderr, "%s pubkey: %v\n", d.Name, err)
		return ExitRuntime
	}
	k, err := secure.ParsePrivateKey(line)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s pubkey: stdin is not a private key: %v\n", d.Name, err)
		return ExitUsage
	}
	fmt.Fprintln(out, k.Public().String())
	return ExitOK
}

func (d Daemon) status(args []string) int {
	fs := flag.NewFlagSet(d.Name+" status", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	path := fs.String("c", d.DefaultConfig, "config file (for its control_socket)")
	socket := fs.String("socket", "", "control socket path (overrides -c)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	sock := *socket
	if sock == "" {
		var err error
		if sock, err = d.socketFromConfig(*path); err != nil {
			fmt.Fprintf(os.Stderr, "%s status: %v\n", d.Name, err)
			return ExitUsage
		}
	}
	var raw json.RawMessage
	if err := control.FetchStatus(sock, &raw); err != nil {
		fmt.Fprintf(os.Stderr, "%s status: %v\n", d.Name, err)
		return ExitRuntime
	}
	if *asJSON {
		os.Stdout.Write(raw)
		return ExitOK
	}
	if err := d.PrintStatus(os.Stdout, raw); err != nil {
		fmt.Fprintf(os.Stderr, "%s status: %v\n", d.Name, err)
		return ExitRuntime
	}
	return ExitOK
}

// socketFromConfig reads only control_socket, so that status works even
// when another part of the config would not validate.
func (d Daemon) socketFromConfig(path string) (string, error) {
	var f map[string]any
	if _, err := toml.DecodeFile(path, &f); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return d.DefaultSocket, nil
		}
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if sec, ok := f[d.Section].(map[string]any); ok {
		if s, ok := sec["control_socket"].(string); ok && s != "" {
			return s, nil
		}
	}
	return d.DefaultSocket, nil
}
