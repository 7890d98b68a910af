// Package control serves a daemon's state over a unix socket (mode 0600, so
// only root reads it) for `gtun status` and `gtund status`. It speaks HTTP
// with JSON bodies: easy to extend and to poke at with curl --unix-socket.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gtun/gtun/pkg/config"
)

// Server is the control socket of a running daemon.
type Server struct {
	path string
	ln   net.Listener
	srv  *http.Server
	mux  *http.ServeMux
}

// Listen creates the socket at path. A stale socket left by a killed daemon
// is replaced; one that still answers means another daemon uses this path.
func Listen(path string, status func() any, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket dir: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s is in use by another running daemon", path)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("control socket path %s exists and is not a socket; refusing to replace it", path)
		}
		_ = os.Remove(path) // stale socket of a daemon that died
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on control socket %s: %w", path, err)
	}
	// Close removes the file itself; the listener must not unlink whatever is
	// at the path when it is closed later (that may be a successor's socket).
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(status())
	})
	s := &Server{path: path, ln: ln, mux: mux, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}}
	go func() { _ = s.srv.Serve(ln) }() // stopped by Close
	return s, nil
}

// HandleReload serves POST /reload: reload re-reads the config and returns
// the changed keys that apply only at a restart, or why it could not
// (`gtun reload`, `gtund reload` and `gtund peer add` use it; SIGHUP does
// the same). Applied: 200 with ReloadAnswer as JSON. A bad config is
// answered 422, any other failure 500, with the error as text.
func (s *Server) HandleReload(reload func() (restartOnly []string, err error)) {
	s.mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		keys, err := reload()
		if err != nil {
			code := http.StatusInternalServerError
			if config.IsConfigError(err) {
				code = http.StatusUnprocessableEntity
			}
			http.Error(w, err.Error(), code)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ReloadAnswer{RestartOnly: keys})
	})
}

// ReloadAnswer is the answer to an applied reload.
type ReloadAnswer struct {
	// RestartOnly are the changed keys that apply only at a restart: the
	// running values stay.
	RestartOnly []string `json:"restart_only,omitempty"`
}

// ReloadError is a reload the daemon refused, with its answer.
type ReloadError struct {
	BadConfig bool   // the config did not validate (the running one stays)
	Msg       string // the daemon's answer: why
}

func (e *ReloadError) Error() string { return "reload failed: " + e.Msg }

// ErrNotRunning means nothing answers on the control socket.
var ErrNotRunning = errors.New("daemon not running")

// Reload asks the daemon at path to reload its config, waits for it, and
// returns its answer.
func Reload(path string) (ReloadAnswer, error) {
	var answer ReloadAnswer
	resp, err := httpClient(path, 30*time.Second).Post("http://gtun/reload", "", nil)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return answer, fmt.Errorf("%w (no answer on %s: %v)", ErrNotRunning, path, op.Err)
		}
		return answer, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch resp.StatusCode {
	case http.StatusNoContent: // a daemon from before the answer had a body
		return answer, nil
	case http.StatusOK:
		if err := json.Unmarshal(b, &answer); err != nil {
			return answer, fmt.Errorf("reloaded, but the answer is not understood: %w", err)
		}
		return answer, nil
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return answer, fmt.Errorf("the running daemon cannot reload over its control socket (older version?): use systemctl reload or SIGHUP")
	}
	return answer, &ReloadError{BadConfig: resp.StatusCode == http.StatusUnprocessableEntity, Msg: strings.TrimSpace(string(b))}
}

func httpClient(path string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// Close stops serving and removes the socket file.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	_ = s.ln.Close() // Serve may not have taken the listener yet
	_ = os.Remove(s.path)
	return err
}

// FetchStatus asks the daemon at path for its status and decodes it into v.
func FetchStatus(path string, v any) error {
	resp, err := httpClient(path, 5*time.Second).Get("http://gtun/status")
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			return fmt.Errorf("cannot reach the daemon at %s (is it running?): %w", path, op.Err)
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("status: %s: %s", resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
