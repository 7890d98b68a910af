package control

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gtun/gtun/pkg/config"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type status struct {
	Name     string   `json:"name"`
	Sessions int      `json:"sessions"`
	Routes   []string `json:"routes"`
}

// sockPath is a short socket path: unix socket paths are limited to 108 bytes.
func sockPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gtunctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "run", "gtund.sock")
}

func listen(t *testing.T, path string, f func() any) *Server {
	t.Helper()
	s, err := Listen(path, f, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestFetchStatus(t *testing.T) {
	path := sockPath(t) // its directory does not exist yet: Listen creates it
	var calls atomic.Int32
	listen(t, path, func() any {
		n := calls.Add(1)
		return status{Name: "gtund", Sessions: int(n), Routes: []string{"10.244.0.0/16"}}
	})
	for want := 1; want <= 2; want++ {
		var got status
		if err := FetchStatus(path, &got); err != nil {
			t.Fatal(err)
		}
		if got.Name != "gtund" || got.Sessions != want || len(got.Routes) != 1 || got.Routes[0] != "10.244.0.0/16" {
			t.Errorf("status = %+v, want fresh status number %d", got, want)
		}
	}
	var raw json.RawMessage
	if err := FetchStatus(path, &raw); err != nil || !json.Valid(raw) {
		t.Errorf("raw status %q, %v", raw, err)
	}
}

func TestSocketMode(t *testing.T) {
	path := sockPath(t)
	listen(t, path, func() any { return nil })
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 {
		t.Errorf("%s is %v, not a socket", path, st.Mode())
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode %04o, want 0600", perm)
	}
}

func TestSecondListenFails(t *testing.T) {
	path := sockPath(t)
	listen(t, path, func() any { return status{Name: "first"} })
	if s2, err := Listen(path, func() any { return status{Name: "second"} }, quiet); err == nil {
		s2.Close()
		t.Fatal("a second Listen on a served socket succeeded")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Errorf("error %q does not say the socket is in use", err)
	}
	// The first daemon is undisturbed.
	var got status
	if err := FetchStatus(path, &got); err != nil || got.Name != "first" {
		t.Errorf("after the failed Listen: %+v, %v", got, err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := sockPath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // what a killed daemon leaves behind
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket file missing: %v", err)
	}
	if err := FetchStatus(path, new(status)); err == nil {
		t.Fatal("FetchStatus on a stale socket succeeded")
	}
	listen(t, path, func() any { return status{Name: "new"} })
	var got status
	if err := FetchStatus(path, &got); err != nil || got.Name != "new" {
		t.Errorf("status %+v, %v", got, err)
	}
}

func TestCloseRemovesSocket(t *testing.T) {
	path := sockPath(t)
	s, err := Listen(path, func() any { return nil }, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}
	if err := FetchStatus(path, new(status)); err == nil {
		t.Error("FetchStatus succeeded after Close")
	}
}

func TestFetchStatusNoDaemon(t *testing.T) {
	path := sockPath(t)
	err := FetchStatus(path, new(status))
	if err == nil {
		t.Fatal("FetchStatus without a daemon succeeded")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "is it running") {
		t.Errorf("error %q does not name the socket and the likely cause", err)
	}
}

func TestFetchStatusBadPath(t *testing.T) {
	path := sockPath(t)
	listen(t, path, func() any { return nil })
	// Anything but GET /status is not a status.
	c := &strings.Builder{}
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /nope HTTP/1.0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(c, conn); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.String(), "HTTP/1.0 404") {
		t.Errorf("GET /nope answered %q", c.String())
	}
}

func TestListenRefusesToReplaceNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gtund.toml")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Listen(path, func() any { return nil }, slog.Default()); err == nil {
		s.Close()
		t.Fatal("Listen replaced a regular file")
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Fatal("the file was touched")
	}
}

func TestListenCloseListenSamePath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	for i := 0; i < 20; i++ {
		s, err := Listen(path, func() any { return i }, slog.Default())
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		s.Close()
	}
}

func TestReload(t *testing.T) {
	path := sockPath(t)
	if _, err := Reload(path); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("no daemon: %v, want ErrNotRunning", err)
	}
	s := listen(t, path, func() any { return nil })
	// A daemon that does not serve reloads (an older one) says how to do it.
	if _, err := Reload(path); err == nil || !strings.Contains(err.Error(), "SIGHUP") {
		t.Fatalf("without a handler: %v", err)
	}
	var calls atomic.Int32
	var fail atomic.Pointer[error]           // what the next reload returns
	var restartOnly atomic.Pointer[[]string] // what the next applied reload could not apply
	s.HandleReload(func() ([]string, error) {
		calls.Add(1)
		if err := fail.Load(); err != nil {
			return nil, *err
		}
		if keys := restartOnly.Load(); keys != nil {
			return *keys, nil
		}
		return nil, nil
	})
	if answer, err := Reload(path); err != nil || calls.Load() != 1 || len(answer.RestartOnly) != 0 {
		t.Fatalf("reload: %+v, %v, %d calls", answer, err, calls.Load())
	}
	// Applied, but with keys that wait for a restart: the answer names them.
	restartOnly.Store(&[]string{"server.listen", "server.tun"})
	if answer, err := Reload(path); err != nil || !slices.Equal(answer.RestartOnly, []string{"server.listen", "server.tun"}) {
		t.Fatalf("reload with restart-only keys: %+v, %v", answer, err)
	}
	// A bad config and another failure come back apart, each with the
	// daemon's words.
	badConfig := error(&config.Error{File: "gtund.toml", Line: 3, Key: "server.pool", Msg: "required"})
	fail.Store(&badConfig)
	var refused *ReloadError
	if _, err := Reload(path); !errors.As(err, &refused) || !refused.BadConfig || refused.Msg != "gtund.toml:3: server.pool: required" {
		t.Fatalf("reload of a bad config: %v", err)
	}
	other := errors.New("apply map: netlink: operation not permitted")
	fail.Store(&other)
	if _, err := Reload(path); !errors.As(err, &refused) || refused.BadConfig || !strings.Contains(err.Error(), "apply map: netlink") {
		t.Fatalf("failed reload: %v", err)
	}
}
