// Command gtun is the gtun client: it connects to gtund servers and routes
// their cluster CIDRs through a TUN device. See README.md.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/gtun/gtun/pkg/cli"
	"github.com/gtun/gtun/pkg/client"
	"github.com/gtun/gtun/pkg/config"
)

func main() { os.Exit(daemon().Main(os.Args[1:])) }

// daemon is the command line of this binary.
func daemon() cli.Daemon {
	return cli.Daemon{
		Name:          "gtun",
		Short:         "the gtun client: routes remote cluster networks through an encrypted tunnel to gtund servers",
		DefaultConfig: "/etc/gtun/gtun.toml",
		Section:       "client",
		DefaultSocket: "/run/gtun/gtun.sock",
		Run: func(ctx context.Context, path string, reload <-chan struct{}) error {
			cfg, err := config.LoadClient(path)
			if err != nil {
				return err
			}
			log := cfg.Log.Logger()
			// What logs without a logger of its own (the AES-GCM self-test's
			// failure) goes through slog's default: make it this one, in the
			// configured format and level.
			slog.SetDefault(log)
			return client.New(cfg, log).Run(ctx, reload)
		},
		Load:        cli.Loader(config.LoadClient),
		PrintStatus: client.WriteStatus,
	}
}
