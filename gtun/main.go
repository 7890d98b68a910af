// Command gtun is the gtun client: it connects to gtund servers and routes
// their cluster CIDRs through a TUN device. See README.md.
package main

import (
	"context"
	"os"

	"github.com/gtun/gtun/pkg/cli"
	"github.com/gtun/gtun/pkg/client"
	"github.com/gtun/gtun/pkg/config"
)

func main() {
	os.Exit(cli.Daemon{
		Name:          "gtun",
		DefaultConfig: "/etc/gtun/gtun.toml",
		Section:       "client",
		DefaultSocket: "/run/gtun/gtun.sock",
		Run: func(ctx context.Context, path string, reload <-chan struct{}) error {
			cfg, err := config.LoadClient(path)
			if err != nil {
				return err
			}
			return client.New(cfg, cfg.Log.Logger()).Run(ctx, reload)
		},
		PrintStatus: client.WriteStatus,
	}.Main(os.Args[1:]))
}
