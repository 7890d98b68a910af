// Command gtund is the gtun server: it terminates gtun clients and forwards
// their packets into the cluster network. See README.md.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/gtun/gtun/pkg/cli"
	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/peers"
	"github.com/gtun/gtun/pkg/server"
)

func main() { os.Exit(daemon().Main(os.Args[1:])) }

// daemon is the command line of this binary.
func daemon() cli.Daemon {
	return cli.Daemon{
		Name:          "gtund",
		Short:         "the gtun server: terminates gtun clients and forwards their packets into the cluster network",
		DefaultConfig: "/etc/gtund/gtund.toml",
		Section:       "server",
		DefaultSocket: "/run/gtund/gtund.sock",
		Run: func(ctx context.Context, path string, reload <-chan struct{}) error {
			cfg, err := config.LoadServer(path)
			if err != nil {
				return err
			}
			log := cfg.Log.Logger()
			// What logs without a logger of its own (the AES-GCM self-test's
			// failure) goes through slog's default: make it this one, in the
			// configured format and level.
			slog.SetDefault(log)
			return server.New(cfg, log).Run(ctx, reload)
		},
		Load:        cli.Loader(config.LoadServer),
		PrintStatus: server.WriteStatus,
		Commands:    []*cli.Command{peers.Command(), peers.StoreCommand()},
	}
}
