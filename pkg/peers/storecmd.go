package peers

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/gtun/gtun/pkg/atomicfile"
	"github.com/gtun/gtun/pkg/cli"
	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/ipam"
	"github.com/gtun/gtun/pkg/store"
)

// leasesFile is ipam's lease file in state_dir.
const leasesFile = "leases.json"

// StoreCommand is `gtund store`: move a gateway's peers and leases between
// the file store (state_dir) and etcd, so that going to replicas (or back)
// re-onboards nobody.
func StoreCommand() *cli.Command {
	return &cli.Command{Name: "store", Short: "move peers and leases between state_dir and etcd",
		Long: `With [store] backend = "etcd" in the config: import copies the file
store of state_dir (peers.toml, leases.json) into etcd, so every client
keeps its key and its address on every replica; export writes etcd's peers
and leases back to state_dir (for backend = "file", or a backup).`,
		Commands: []*cli.Command{
			{Name: "import", Short: "copy state_dir's peers and leases into etcd (refuses any name, key or address already there)",
				Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
					cfgPath := fs.String("c", defaultConfig, "the gtund config `FILE`")
					from := fs.String("from", "", "the `DIR` holding peers.toml and leases.json (default: state_dir)")
					return func(e *cli.Env) int { return importStore(*cfgPath, *from, e.Stdout, e.Stderr) }
				}},
			{Name: "export", Short: "write etcd's peers and leases to state_dir (peers.toml, leases.json)",
				Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
					cfgPath := fs.String("c", defaultConfig, "the gtund config `FILE`")
					to := fs.String("to", "", "the `DIR` to write peers.toml and leases.json to (default: state_dir)")
					force := fs.Bool("force", false, "overwrite files that exist")
					return func(e *cli.Env) int { return exportStore(*cfgPath, *to, *force, e.Stdout, e.Stderr) }
				}},
		}}
}

func sharedStore(cfgPath, what string, stderr io.Writer) (*config.Server, *store.Etcd, int) {
	cfg, err := config.LoadServer(cfgPath)
	if err != nil {
		return nil, nil, fail(stderr, what, err)
	}
	if !cfg.Store.Shared() {
		fmt.Fprintf(stderr, "gtund store %s: %s has [store] backend = %q: set backend = \"etcd\" and its endpoints first\n", what, cfgPath, cfg.Store.Backend)
		return nil, nil, cli.ExitUsage
	}
	e, err := store.Dial(cfg.Store)
	if err != nil {
		return nil, nil, fail(stderr, what, err)
	}
	return cfg, e, cli.ExitOK
}

func importStore(cfgPath, from string, stdout, stderr io.Writer) int {
	cfg, e, code := sharedStore(cfgPath, "import", stderr)
	if e == nil {
		return code
	}
	defer e.Close()
	if from == "" {
		from = cfg.StateDir
	}
	path := filepath.Join(from, config.PeersFileName)
	list, err := read(path)
	if err != nil {
		return fail(stderr, "import", err)
	}
	src, err := Encode(list)
	if err != nil {
		return fail(stderr, "import", err)
	}
	// The peers must be valid with this config, as gtund will load them.
	if _, err := config.LoadServerWithPeers(cfgPath, src); err != nil {
		return fail(stderr, "import", err)
	}
	leases, err := ipam.ReadLeases(from)
	if err != nil {
		return fail(stderr, "import", err)
	}
	if err := e.Import(list, leases); err != nil {
		return fail(stderr, "import", err)
	}
	fmt.Fprintf(stdout, "imported %d peers (%s) and %d leases (%s) into etcd %s prefix %s\n",
		len(list), path, len(leases), filepath.Join(from, leasesFile), e.Endpoints()[0], e.Prefix())
	return cli.ExitOK
}

func exportStore(cfgPath, to string, force bool, stdout, stderr io.Writer) int {
	cfg, e, code := sharedStore(cfgPath, "export", stderr)
	if e == nil {
		return code
	}
	defer e.Close()
	if to == "" {
		to = cfg.StateDir
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Store.DialTimeout)
	defer cancel()
	snap, err := e.Load(ctx)
	if err != nil {
		return fail(stderr, "export", err)
	}
	peersPath, leasesPath := filepath.Join(to, config.PeersFileName), filepath.Join(to, leasesFile)
	if !force {
		for _, p := range []string{peersPath, leasesPath} {
			if _, err := os.Stat(p); err == nil {
				return fail(stderr, "export", usagef("%s exists: --force to overwrite it", p))
			} else if !errors.Is(err, os.ErrNotExist) {
				return fail(stderr, "export", err)
			}
		}
	}
	src, err := Encode(snap.Peers)
	if err != nil {
		return fail(stderr, "export", err)
	}
	leases := snap.Leases
	if leases == nil {
		leases = []ipam.Lease{}
	}
	lj, err := json.MarshalIndent(leases, "", "  ")
	if err != nil {
		return fail(stderr, "export", err)
	}
	if err := os.MkdirAll(to, 0o700); err != nil {
		return fail(stderr, "export", err)
	}
	if err := atomicfile.Write(peersPath, src); err != nil {
		return fail(stderr, "export", err)
	}
	if err := atomicfile.Write(leasesPath, append(lj, '\n')); err != nil {
		return fail(stderr, "export", err)
	}
	fmt.Fprintf(stdout, "exported %d peers to %s and %d leases to %s (etcd revision %d)\n", len(snap.Peers), peersPath, len(snap.Leases), leasesPath, snap.Revision)
	return cli.ExitOK
}
