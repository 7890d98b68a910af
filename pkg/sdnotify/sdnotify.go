// Package sdnotify tells systemd about the daemon's state (sd_notify(3)):
// READY=1 once it serves, and STATUS= lines that `systemctl status` shows.
// Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// Notify sends state lines such as "READY=1" or "STATUS=connected".
func Notify(lines ...string) error {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return nil
	}
	if strings.HasPrefix(sock, "@") {
		sock = "\x00" + sock[1:] // abstract namespace
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(lines, "\n"))); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Ready reports readiness with a status line.
func Ready(status string) error { return Notify("READY=1", "STATUS="+status) }

// Status updates the status line.
func Status(status string) error { return Notify("STATUS=" + status) }

// Stopping reports that shutdown has begun.
func Stopping() error { return Notify("STOPPING=1", "STATUS=stopping") }
