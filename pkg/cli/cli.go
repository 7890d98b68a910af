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
	Short         string // what the binary is, in one line
	DefaultConfig string
	Section       string // TOML table holding control_socket: "client" or "server"
	DefaultSocket string
	// Run loads the config at path and runs until ctx ends, reloading the
	// file whenever reload fires (SIGHUP). A config error at start must
	// satisfy config.IsConfigError so that the exit code is 2.
	Run func(ctx context.Context, path string, reload <-chan struct{}) error
	// Load reads and validates the config at path as Run does at start
	// (key file and peers file included), for check and showconf.
	Load func(path string) (Config, error)
	// PrintStatus renders the JSON status for humans.
	PrintStatus func(w io.Writer, raw json.RawMessage) error
	// Commands are commands only this binary has (gtund's "peer").
	Commands []*Command
}

// Config is a loaded, validated config, as check and showconf see it.
type Config interface {
	// Summary says in one line what was loaded (files, peers, key).
	Summary() string
	// WriteEffective writes the config as it applies, defaults filled in
	// and the peers file merged, as TOML; never a private key.
	WriteEffective(w io.Writer) error
}

// Loader adapts a config loader (config.LoadServer) to Daemon.Load.
func Loader[C Config](load func(path string) (C, error)) func(string) (Config, error) {
	return func(path string) (Config, error) {
		cfg, err := load(path)
		if err != nil {
			return nil, err // not a nil *config.Server in a non-nil Config
		}
		return cfg, nil
	}
}

// Main runs the command line and returns the exit code.
func (d Daemon) Main(args []string) int {
	return Execute(d.Tree(), args, IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
}

// configFlag declares -c, the config file every command that reads one takes.
func (d Daemon) configFlag(fs *flag.FlagSet, what string) *string {
	return fs.String("c", d.DefaultConfig, what+" `FILE`")
}

// Tree is the binary's command tree.
func (d Daemon) Tree() *Command {
	root := &Command{
		Name:  d.Name,
		Short: d.Short,
		Long: fmt.Sprintf(`Without a command, %[1]s runs in the foreground, as "%[1]s run" does.
Exit codes: 0 clean stop, 1 runtime failure, 2 bad config or usage.`, d.Name),
		Setup: d.setupRun,
	}
	root.Commands = []*Command{
		{Name: "run", Short: "run in the foreground (the default without a command)", Setup: d.setupRun},
		{Name: "check", Short: "validate the config, its key file and the peers file as at start, then exit",
			Long: `Loads the config exactly as the daemon does at start, without starting
anything: every problem is printed with file:line and key, and the exit code
is 2; a good config prints a summary line and exits 0. Run it before a
reload or restart.`,
			Setup: d.setupCheck},
		{Name: "showconf", Short: "print the effective config: defaults filled in, peers file merged, no secrets",
			Long: `Prints the config as the daemon would run it: every key with its value,
defaults included, and the peers of the peers file merged in. The output is
itself a valid config. Private keys are never printed (private_key_file
names the file).`,
			Setup: d.setupShowconf},
		{Name: "status", Short: "show the running daemon's state (from its control socket)",
			Synopsis: "[--json] [-c FILE | --socket PATH]", Setup: d.setupStatus},
	}
	root.Commands = append(root.Commands, &Command{Name: "reload",
		Short:    "make the running daemon re-read its config (as SIGHUP does) and report the outcome",
		Synopsis: "[-c FILE | --socket PATH]",
		Long: `Asks the running daemon, over its control socket, to re-read its config
and waits for the answer: exit 0 when it applied (changed keys that apply
only at a restart are named: their running values stay), 2 when it refused
a bad config (the running config stays; the errors are printed), 1 when it
cannot be reached or failed otherwise.`,
		Setup: d.setupReload})
	root.Commands = append(root.Commands, d.Commands...)
	root.Commands = append(root.Commands,
		&Command{Name: "genkey", Short: "print a new private key", Setup: func(*flag.FlagSet) func(*Env) int { return d.genkey }},
		&Command{Name: "pubkey", Short: "read a private key on stdin, print its public key",
			Setup: func(*flag.FlagSet) func(*Env) int {
				return func(e *Env) int { return d.pubkey(e.Stdin, e.Stdout, e.Stderr) }
			}},
		&Command{Name: "version", Aliases: []string{"--version"}, Short: "print the version, commit and wire protocol version",
			Setup: func(*flag.FlagSet) func(*Env) int { return d.version }},
	)
	return root
}

func (d Daemon) setupRun(fs *flag.FlagSet) func(*Env) int {
	path := d.configFlag(fs, "the config")
	return func(*Env) int { return d.run(*path) }
}

func (d Daemon) setupCheck(fs *flag.FlagSet) func(*Env) int {
	path := d.configFlag(fs, "the config")
	return func(e *Env) int {
		cfg, err := d.Load(*path)
		if err != nil {
			return configFailure(e, err)
		}
		fmt.Fprintf(e.Stdout, "%s: ok: %s\n", *path, cfg.Summary())
		return ExitOK
	}
}

func (d Daemon) setupShowconf(fs *flag.FlagSet) func(*Env) int {
	path := d.configFlag(fs, "the config")
	return func(e *Env) int {
		cfg, err := d.Load(*path)
		if err != nil {
			return configFailure(e, err)
		}
		if err := cfg.WriteEffective(e.Stdout); err != nil {
			return e.Errorf("%v", err)
		}
		return ExitOK
	}
}

// configFailure prints why a config did not load: a bad config (exit 2)
// or something else (exit 1).
func configFailure(e *Env, err error) int {
	if config.IsConfigError(err) {
		fmt.Fprintf(e.Stderr, "%s: bad config:\n%s\n", e.Path(), indent(err.Error()))
		return ExitUsage
	}
	return e.Errorf("%v", err)
}

func (d Daemon) version(e *Env) int {
	version, commit := VersionInfo()
	fmt.Fprintf(e.Stdout, "%s %s (commit %s, protocol %d)\n", d.Name, version, commit, secure.ProtocolVersion)
	return ExitOK
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

func (d Daemon) genkey(e *Env) int {
	k, err := secure.GeneratePrivateKey()
	if err != nil {
		return e.Errorf("%v", err)
	}
	fmt.Fprintln(e.Stdout, k.Encode())
	return ExitOK
}

func (d Daemon) pubkey(in io.Reader, out, errOut io.Writer) int {
	line, err := bufio.NewReader(io.LimitReader(in, 1024)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintf(errOut, "%s pubkey: %v\n", d.Name, err)
		return ExitRuntime
	}
	k, err := secure.ParsePrivateKey(line)
	if err != nil {
		fmt.Fprintf(errOut, "%s pubkey: stdin is not a private key: %v\n", d.Name, err)
		return ExitUsage
	}
	fmt.Fprintln(out, k.Public().String())
	return ExitOK
}

// socketFlags declares how a command finds the running daemon's control
// socket: -c FILE (its control_socket) or --socket PATH; the returned
// function resolves them.
func (d Daemon) socketFlags(fs *flag.FlagSet) func() (string, error) {
	path := fs.String("c", d.DefaultConfig, "the config `FILE`, for its control_socket")
	socket := fs.String("socket", "", "the control socket `PATH` (instead of -c)")
	return func() (string, error) {
		if *socket != "" {
			return *socket, nil
		}
		return d.socketFromConfig(*path)
	}
}

func (d Daemon) setupStatus(fs *flag.FlagSet) func(*Env) int {
	socket := d.socketFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON, for machines")
	return func(e *Env) int {
		sock, err := socket()
		if err != nil {
			fmt.Fprintf(e.Stderr, "%s: %v\n", e.Path(), err)
			return ExitUsage
		}
		var raw json.RawMessage
		if err := control.FetchStatus(sock, &raw); err != nil {
			return e.Errorf("%v", err)
		}
		if *asJSON {
			e.Stdout.Write(raw)
			return ExitOK
		}
		if err := d.PrintStatus(e.Stdout, raw); err != nil {
			return e.Errorf("%v", err)
		}
		return ExitOK
	}
}

func (d Daemon) setupReload(fs *flag.FlagSet) func(*Env) int {
	socket := d.socketFlags(fs)
	return func(e *Env) int {
		sock, err := socket()
		if err != nil {
			fmt.Fprintf(e.Stderr, "%s: %v\n", e.Path(), err)
			return ExitUsage
		}
		answer, err := control.Reload(sock)
		var refused *control.ReloadError
		switch {
		case err == nil && len(answer.RestartOnly) > 0:
			fmt.Fprintf(e.Stdout, "%s: reloaded; these changes apply only at a restart (the running values stay): %s\n",
				d.Name, strings.Join(answer.RestartOnly, ", "))
			return ExitOK
		case err == nil:
			fmt.Fprintf(e.Stdout, "%s: reloaded\n", d.Name)
			return ExitOK
		case errors.As(err, &refused) && refused.BadConfig:
			fmt.Fprintf(e.Stderr, "%s: refused a bad config; the running config stays:\n%s\n", e.Path(), indent(refused.Msg))
			return ExitUsage
		}
		return e.Errorf("%v", err)
	}
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
