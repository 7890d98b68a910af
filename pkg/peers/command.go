package peers

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gtun/gtun/pkg/cli"
	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/control"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/store"
	"github.com/gtun/gtun/pkg/transport"
)

const defaultConfig = "/etc/gtund/gtund.toml"

// Command is `gtund peer`: add, list and remove the VMs gtund accepts.
func Command() *cli.Command {
	return &cli.Command{Name: "peer", Short: "add, list and remove peers (the VMs gtund accepts)",
		Long: `Peers live in the peers file (state_dir/peers.toml) next to those of the
config; add and remove rewrite it atomically and ask a running gtund to
reload, so other sessions stay up.`,
		Commands: []*cli.Command{
			{Name: "add", Short: "add a VM: its key, a [[peer]] in the peers file, and its gtun.toml on stdout",
				Args: "NAME", MinArgs: 1, MaxArgs: 1,
				Long: `Makes a key pair for the VM (the private key goes to a new 0600 file, never
to the terminal), or takes the VM's own public key with --public-key; adds
the peer to the peers file after validating the result as gtund would; asks
a running gtund to apply it; and prints a complete gtun.toml for the VM.`,
				Setup: setupAdd},
			{Name: "list", Aliases: []string{"ls"}, Short: "list the peers, where each is defined, and whether it is connected",
				Setup: setupList},
			{Name: "remove", Aliases: []string{"rm"}, Short: "remove a peer that peer add made; a running gtund disconnects it",
				Args: "NAME", MinArgs: 1, MaxArgs: 1, Setup: setupRemove},
		}}
}

// listFlag collects a repeated flag; commas separate values too.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// fail prints err and returns its exit code: 2 for the caller's mistakes
// (and bad config), 1 for everything else.
func fail(stderr io.Writer, what string, err error) int {
	if config.IsConfigError(err) {
		fmt.Fprintf(stderr, "gtund peer %s: bad config:\n  %s\n", what, strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return cli.ExitUsage
	}
	fmt.Fprintf(stderr, "gtund peer %s: %v\n", what, err)
	if IsUsage(err) {
		return cli.ExitUsage
	}
	return cli.ExitRuntime
}

// addFlags are the flags of peer add.
type addFlags struct {
	cfgPath, endpoint, address, keyOut, pubKey, keyPath, transport, serverName string
	allowed                                                                    listFlag
}

func setupAdd(fs *flag.FlagSet) func(*cli.Env) int {
	var f addFlags
	fs.StringVar(&f.cfgPath, "c", defaultConfig, "the gtund config `FILE`")
	fs.StringVar(&f.endpoint, "endpoint", "", "`HOST:PORT` the new client dials (default: gtund's listen address, unless it is a wildcard); the replicas of a gateway comma-separated")
	fs.StringVar(&f.address, "address", "", "fixed tunnel `ADDRESS` inside the pool (default: a sticky address from the pool)")
	fs.Var(&f.allowed, "allowed", "`CIDR` the client may reach, within the served routes (or the gateway's own address as /32, which opens the gtund host to it); repeat or separate with commas (default: all served routes)")
	fs.StringVar(&f.keyOut, "key-out", "", "write the new client's private key to `FILE`, mode 0600 (default NAME.key in the current directory)")
	fs.StringVar(&f.pubKey, "public-key", "", "use this client public `KEY` (made on the VM with gtun genkey/pubkey) instead of generating a key pair")
	fs.StringVar(&f.keyPath, "key-path", "/etc/gtun/private.key", "private_key_file in the printed gtun.toml: the `PATH` of the key on the VM")
	fs.StringVar(&f.transport, "transport", "", "the `TRANSPORT` in the printed gtun.toml: tcp, udp, kcp or auto (default: from gtund's transports)")
	fs.StringVar(&f.serverName, "server-name", "", "the [[server]] `NAME` in the printed gtun.toml (default: this host's name)")
	return func(e *cli.Env) int { return add(e, e.Args[0], f) }
}

func add(e *cli.Env, name string, f addFlags) int {
	stdout, stderr := e.Stdout, e.Stderr
	cfg, err := config.LoadServer(f.cfgPath)
	if err != nil {
		return fail(stderr, "add", err)
	}
	// Replicas of one gateway: each client gets all of them, comma-separated.
	var eps []string
	for _, one := range strings.Split(f.endpoint, ",") {
		ep, err := clientEndpoint(cfg, strings.TrimSpace(one))
		if err != nil {
			return fail(stderr, "add", err)
		}
		eps = append(eps, ep)
	}
	tr, err := clientTransport(cfg, f.transport)
	if err != nil {
		return fail(stderr, "add", err)
	}
	serverName := f.serverName
	if serverName == "" {
		if serverName, err = os.Hostname(); err != nil || serverName == "" {
			serverName = "gtund"
		}
	}
	if !nameRe.MatchString(name) {
		return fail(stderr, "add", usagef("bad peer name %q: use letters, digits, '.', '_' and '-' (up to 63, starting with a letter or digit)", name))
	}
	peer := config.PeerSection{Name: name, Address: f.address, Allowed: f.allowed}

	// The key: the client's own public key when given (its private key
	// never leaves the VM), else a new pair whose private half goes to a
	// new 0600 file, never to the terminal.
	var keyFile string
	if f.pubKey != "" {
		if f.keyOut != "" {
			return fail(stderr, "add", usagef("--key-out and --public-key exclude each other: with --public-key there is no private key here"))
		}
		k, err := secure.ParsePublicKey(f.pubKey)
		if err != nil {
			return fail(stderr, "add", usagef("--public-key: %v", err))
		}
		peer.PublicKey = k.String()
	} else {
		keyFile = f.keyOut
		if keyFile == "" {
			keyFile = name + ".key"
		}
		k, err := secure.GeneratePrivateKey()
		if err != nil {
			return fail(stderr, "add", err)
		}
		f, err := os.OpenFile(keyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			if errors.Is(err, os.ErrExist) {
				return fail(stderr, "add", usagef("%s exists; refusing to overwrite a key (choose another --key-out)", keyFile))
			}
			return fail(stderr, "add", err)
		}
		_, err = f.WriteString(k.Encode() + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(keyFile)
			return fail(stderr, "add", fmt.Errorf("write %s: %w", keyFile, err))
		}
		peer.PublicKey = k.Public().String()
	}

	cfg, err = Add(f.cfgPath, peer)
	if err != nil {
		if keyFile != "" {
			os.Remove(keyFile) // the peer was not added: its key is of no use
		}
		return fail(stderr, "add", err)
	}
	fmt.Fprint(stdout, ClientConfig(ClientParams{Peer: name, ServerName: serverName, Endpoints: eps, Transport: tr,
		ServerKey: cfg.PrivateKey.Public().String(), KeyPath: f.keyPath, FECData: cfg.FECData, FECParity: cfg.FECParity}))

	code := cli.ExitOK
	if cfg.Store.Shared() {
		fmt.Fprintf(stderr, "gtund peer add: peer %q added to etcd (%s, prefix %s): every replica serves it within a second; other sessions stay up.\n",
			name, strings.Join(cfg.Store.Endpoints, ","), cfg.Store.Prefix)
	} else {
		fmt.Fprintf(stderr, "gtund peer add: peer %q added to %s\n", name, cfg.PeersFile)
		code = reload(cfg, stderr, "it can connect now")
	}
	if keyFile != "" {
		fmt.Fprintf(stderr, "The client's private key is in %s: copy it to the VM as %s (mode 0600, e.g. install -m 0600), then delete it here.\n", keyFile, f.keyPath)
	} else {
		fmt.Fprintf(stderr, "The VM's private key (whose public key you gave) must be at %s there.\n", f.keyPath)
	}
	fmt.Fprintln(stderr, "The config above goes to /etc/gtun/gtun.toml on the VM; then: systemctl enable --now gtun")
	return code
}

// reload asks a running gtund to apply the peers file; not running is
// fine (it reads the file when it starts).
func reload(cfg *config.Server, stderr io.Writer, applied string) int {
	_, err := control.Reload(cfg.ControlSocket)
	switch {
	case err == nil:
		fmt.Fprintf(stderr, "gtund reloaded: %s; other sessions stay up.\n", applied)
	case errors.Is(err, control.ErrNotRunning):
		fmt.Fprintf(stderr, "gtund is not running (nothing answers on %s): the change applies when it starts.\n", cfg.ControlSocket)
	default:
		fmt.Fprintf(stderr, "gtund peer: the peers file is written, but gtund did not apply it: %v\n", err)
		return cli.ExitRuntime
	}
	return cli.ExitOK
}

// clientEndpoint is where the new client dials: --endpoint, or gtund's
// listen address when it names one host.
func clientEndpoint(cfg *config.Server, flagValue string) (string, error) {
	_, listenPort, _ := net.SplitHostPort(cfg.Listen)
	if flagValue != "" {
		host, port, err := net.SplitHostPort(flagValue)
		if err != nil && strings.Contains(err.Error(), "missing port") {
			host, port, err = flagValue, listenPort, nil
		}
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			return "", usagef("--endpoint %q: want HOST:PORT (the address the VM reaches gtund at)", flagValue)
		}
		return net.JoinHostPort(host, port), nil
	}
	host, _, _ := net.SplitHostPort(cfg.Listen)
	if a, err := netip.ParseAddr(host); host == "" || (err == nil && a.IsUnspecified()) {
		return "", usagef("gtund listens on %s (every address): say which address the VM reaches it at with --endpoint HOST:PORT", cfg.Listen)
	}
	return cfg.Listen, nil
}

// clientTransport picks the client's transport: auto (udp, falling back
// to tcp) where both are served, else udp, kcp or tcp, whichever is.
func clientTransport(cfg *config.Server, flagValue string) (string, error) {
	tcp, udp, kcp := slices.Contains(cfg.Transports, transport.TCP), slices.Contains(cfg.Transports, transport.UDP), slices.Contains(cfg.Transports, transport.KCP)
	switch flagValue {
	case "":
		switch {
		case tcp && udp:
			return transport.Auto, nil
		case udp:
			return transport.UDP, nil
		case kcp:
			return transport.KCP, nil
		}
		return transport.TCP, nil
	case transport.TCP, transport.UDP, transport.KCP:
		if !slices.Contains(cfg.Transports, flagValue) {
			return "", usagef("--transport %s: gtund does not listen with it (transports %v)", flagValue, cfg.Transports)
		}
		return flagValue, nil
	case transport.Auto:
		if !tcp || !udp {
			return "", usagef("--transport auto: needs udp and tcp in gtund's transports (it has %v)", cfg.Transports)
		}
		return flagValue, nil
	}
	return "", usagef("--transport %q: tcp, udp, kcp or auto", flagValue)
}

// ClientParams are what the printed gtun.toml says.
type ClientParams struct {
	Peer, ServerName, Transport, ServerKey, KeyPath string
	Endpoints                                       []string // the gateway's replicas, or its one address
	FECData, FECParity                              int
}

// ClientConfig renders a complete gtun.toml for a new peer.
func ClientConfig(p ClientParams) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# gtun.toml for peer %q, made by "gtund peer add" on %s.
# Put it at /etc/gtun/gtun.toml on the VM, with the client's private key at
# private_key_file (mode 0600). See etc/gtun.toml for every key.

[client]
private_key_file = %q
tun = "gtun0"
control_socket = "/run/gtun/gtun.sock"

[[server]]
name = %q
endpoints = [%s]
transport = %q
public_key = %q
`, p.Peer, time.Now().UTC().Format(time.RFC3339), p.KeyPath, p.ServerName, quoted(p.Endpoints), p.Transport, p.ServerKey)
	if len(p.Endpoints) > 1 { // replicas of one gateway: spread the clients over them
		b.WriteString("endpoint_order = \"spread\"\n")
	}
	if p.Transport != transport.TCP && (p.FECData != 0 || p.FECParity != 0) {
		fmt.Fprintf(&b, "fec_data = %d\nfec_parity = %d\n", p.FECData, p.FECParity)
	}
	b.WriteString("\n[log]\nlevel = \"info\"\n")
	return b.String()
}

func quoted(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

func setupList(fs *flag.FlagSet) func(*cli.Env) int {
	cfgPath := fs.String("c", defaultConfig, "the gtund config `FILE`")
	return func(e *cli.Env) int { return list(*cfgPath, e.Stdout, e.Stderr) }
}

func list(cfgPath string, stdout, stderr io.Writer) int {
	cfg, err := config.LoadServer(cfgPath)
	if err != nil {
		return fail(stderr, "list", err)
	}
	// Connected or not, and the leased address, from the running gtund.
	var st struct {
		Peers []struct {
			Name      string `json:"name"`
			Connected bool   `json:"connected"`
			Address   string `json:"address"`
		} `json:"peers"`
	}
	running := control.FetchStatus(cfg.ControlSocket, &st) == nil
	// With etcd: its peers as they are now, and where each is connected,
	// from what every running replica publishes.
	var replicas []store.Replica
	var storeErr error
	if cfg.Store.Shared() {
		cfg, replicas, storeErr = fromEtcd(cfgPath, cfg)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPUBLIC KEY\tADDRESS\tALLOWED\tDEFINED IN\tCONNECTED")
	for _, p := range cfg.Peers {
		addr := "(from pool)"
		if p.Address.IsValid() {
			addr = p.Address.String()
		}
		connected := "?"
		if running {
			connected = "no"
		}
		for _, s := range st.Peers {
			if s.Name == p.Name {
				if s.Connected {
					connected = "yes"
					if cfg.Store.Shared() {
						connected = "yes (" + cfg.Store.Replica + ")"
					}
				}
				if !p.Address.IsValid() && s.Address != "" {
					addr = s.Address
				}
			}
		}
		if cfg.Store.Shared() && storeErr == nil {
			var on []string
			for _, r := range replicas {
				for _, rs := range r.Sessions {
					if rs.Peer == p.Name {
						on = append(on, r.Name+" from "+rs.Endpoint)
						if !p.Address.IsValid() {
							addr = rs.Address
						}
					}
				}
			}
			connected = "no"
			if len(on) > 0 {
				connected = "yes (" + strings.Join(on, "; ") + ")"
			}
		}
		var allowed []string
		for _, a := range p.Allowed {
			allowed = append(allowed, a.String())
		}
		where := "peers file"
		switch {
		case p.Source == cfg.File:
			where = "config"
		case cfg.Store.Shared():
			where = "etcd"
		}
		fmt.Fprintf(tw, "%s\t%s…\t%s\t%s\t%s\t%s\n", p.Name, p.PublicKey.String()[:8], addr, strings.Join(allowed, ","), where, connected)
	}
	tw.Flush()
	if cfg.Store.Shared() {
		fmt.Fprintf(stdout, "\nconfig: %s\nstore: etcd %s prefix %s\n", cfg.File, strings.Join(cfg.Store.Endpoints, ","), cfg.Store.Prefix)
		if storeErr != nil {
			fmt.Fprintf(stdout, "etcd is unreachable (%v): peers from this replica's cache %s, CONNECTED from this replica only\n", storeErr, cfg.PeersFile)
		} else {
			var names []string
			for _, r := range replicas {
				n := fmt.Sprintf("%s (%d sessions", r.Name, r.SessionsTotal)
				if len(r.Sessions) < r.SessionsTotal {
					n += fmt.Sprintf(", the first %d listed: CONNECTED says no for the others", len(r.Sessions))
				}
				names = append(names, n+")")
			}
			fmt.Fprintf(stdout, "replicas running: %s\n", orNone(names))
			served := map[string][]string{}
			for _, r := range replicas {
				served[r.Served] = append(served[r.Served], r.Name)
			}
			if len(served) > 1 {
				var groups []string
				for d, ns := range served {
					groups = append(groups, strings.Join(ns, "+")+" ("+d+")")
				}
				slices.Sort(groups)
				fmt.Fprintf(stdout, "WARNING: the replicas serve different configs (pool, routes, map, dns, nat, mtu, keepalive or key differ): %s\n", strings.Join(groups, ", "))
			}
		}
	} else {
		fmt.Fprintf(stdout, "\nconfig: %s\npeers file: %s\n", cfg.File, cfg.PeersFile)
	}
	if !running {
		fmt.Fprintf(stdout, "gtund is not running (nothing answers on %s): CONNECTED unknown\n", cfg.ControlSocket)
	}
	return cli.ExitOK
}

// fromEtcd is the config with etcd's peers as they are now, and the
// replicas running; on an error, the config as loaded (from the cache).
func fromEtcd(cfgPath string, cfg *config.Server) (*config.Server, []store.Replica, error) {
	e, err := store.Dial(cfg.Store)
	if err != nil {
		return cfg, nil, err
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Store.DialTimeout)
	defer cancel()
	snap, err := e.Load(ctx)
	if err != nil {
		return cfg, nil, err
	}
	src, err := Encode(snap.Peers)
	if err != nil {
		return cfg, nil, err
	}
	if c, err := config.LoadServerWithPeers(cfgPath, src); err == nil {
		cfg = c
	}
	reps, err := e.Replicas()
	return cfg, reps, err
}

func orNone(ss []string) string {
	if len(ss) == 0 {
		return "none"
	}
	return strings.Join(ss, ", ")
}

func setupRemove(fs *flag.FlagSet) func(*cli.Env) int {
	cfgPath := fs.String("c", defaultConfig, "the gtund config `FILE`")
	return func(e *cli.Env) int { return remove(*cfgPath, e.Args[0], e.Stderr) }
}

func remove(cfgPath, name string, stderr io.Writer) int {
	cfg, err := Remove(cfgPath, name)
	if err != nil {
		return fail(stderr, "remove", err)
	}
	if cfg.Store.Shared() {
		fmt.Fprintf(stderr, "gtund peer remove: peer %q removed from etcd (%s, prefix %s): every replica disconnects it within a second.\n",
			name, strings.Join(cfg.Store.Endpoints, ","), cfg.Store.Prefix)
		return cli.ExitOK
	}
	fmt.Fprintf(stderr, "gtund peer remove: peer %q removed from %s\n", name, cfg.PeersFile)
	return reload(cfg, stderr, "the peer is disconnected and refused from now on")
}
