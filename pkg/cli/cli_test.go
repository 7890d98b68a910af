package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/secure"
)

// daemon is a gtund whose Run only loads the config, like the real main.
func daemon(t *testing.T) (Daemon, *bool) {
	t.Helper()
	ran := new(bool)
	return Daemon{
		Name:          "gtund",
		DefaultConfig: filepath.Join(t.TempDir(), "gtund.toml"),
		Section:       "server",
		DefaultSocket: "/nonexistent/gtund.sock",
		Run: func(ctx context.Context, path string, _ <-chan struct{}) error {
			*ran = true
			_, err := config.LoadServer(path)
			return err
		},
		Load:        Loader(config.LoadServer),
		PrintStatus: func(w io.Writer, raw json.RawMessage) error { _, err := w.Write(raw); return err },
	}, ran
}

// withStdio runs f with os.Stdin reading data and returns what f wrote to
// os.Stdout.
func withStdio(t *testing.T, data string, f func()) string {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "stdin")
	if err := os.WriteFile(in, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	inf, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer inf.Close()
	outf, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer outf.Close()
	errf, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	oldIn, oldOut, oldErr := os.Stdin, os.Stdout, os.Stderr
	os.Stdin, os.Stdout, os.Stderr = inf, outf, errf
	defer func() { os.Stdin, os.Stdout, os.Stderr = oldIn, oldOut, oldErr }()
	f()
	b, err := os.ReadFile(outf.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPubkeyKnownKey(t *testing.T) {
	k, err := secure.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	want := k.Public().String()
	d, _ := daemon(t)
	for _, in := range []string{k.Encode() + "\n", k.Encode(), "  " + k.Encode() + "  \n", k.Encode() + "\ntrailing garbage\n"} {
		var out bytes.Buffer
		if code := d.pubkey(strings.NewReader(in), &out, io.Discard); code != ExitOK {
			t.Errorf("pubkey(%q) = exit %d", in, code)
		}
		if got := strings.TrimSpace(out.String()); got != want {
			t.Errorf("pubkey(%q) = %q, want %q", in, got, want)
		}
	}
	// The same through Main, with the real stdin and stdout.
	var code int
	out := withStdio(t, k.Encode()+"\n", func() { code = d.Main([]string{"pubkey"}) })
	if code != ExitOK || out != want+"\n" {
		t.Errorf("Main(pubkey) = exit %d, output %q; want 0, %q", code, out, want+"\n")
	}
}

// A fixed key, so that the test does not only agree with itself.
func TestPubkeyVector(t *testing.T) {
	// RFC 7748 section 6.1: Alice's private and public key.
	priv := []byte{0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2, 0x66, 0x45,
		0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9, 0x2c, 0x2a}
	var k secure.PrivateKey
	copy(k[:], priv)
	const want = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
	if got := k.Public().String(); got != want {
		t.Fatalf("secure computes %s, want %s", got, want)
	}
	d, _ := daemon(t)
	var out bytes.Buffer
	if code := d.pubkey(strings.NewReader(k.Encode()+"\n"), &out, io.Discard); code != ExitOK || strings.TrimSpace(out.String()) != want {
		t.Errorf("pubkey = exit %d, %q; want %s", code, out.String(), want)
	}
}

func TestPubkeyGarbage(t *testing.T) {
	d, _ := daemon(t)
	for _, in := range []string{"", "\n", "garbage\n", "AAAA\n", strings.Repeat("A", 43) + "=\n" /* all zeros */, "not base64 at all!!!\n"} {
		var out bytes.Buffer
		if code := d.pubkey(strings.NewReader(in), &out, io.Discard); code != ExitUsage {
			t.Errorf("pubkey(%q) = exit %d, want %d", in, code, ExitUsage)
		}
		if out.Len() != 0 {
			t.Errorf("pubkey(%q) printed %q", in, out.String())
		}
	}
	var code int
	out := withStdio(t, "garbage\n", func() { code = d.Main([]string{"pubkey"}) })
	if code != ExitUsage || out != "" {
		t.Errorf("Main(pubkey) on garbage = exit %d, output %q; want %d and nothing", code, out, ExitUsage)
	}
}

func TestGenkey(t *testing.T) {
	d, _ := daemon(t)
	var code int
	out := withStdio(t, "", func() { code = d.Main([]string{"genkey"}) })
	if code != ExitOK {
		t.Fatalf("genkey exit %d", code)
	}
	k, err := secure.ParsePrivateKey(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("genkey printed %q: %v", out, err)
	}
	// genkey | pubkey round trip.
	var pub bytes.Buffer
	if code := d.pubkey(strings.NewReader(out), &pub, io.Discard); code != ExitOK || strings.TrimSpace(pub.String()) != k.Public().String() {
		t.Errorf("pubkey of genkey output = exit %d, %q", code, pub.String())
	}
}

func TestMainMissingConfigIsUsageError(t *testing.T) {
	d, ran := daemon(t)
	var code int
	withStdio(t, "", func() { code = d.Main([]string{"-c", "/nonexistent/gtund.toml"}) })
	if !*ran {
		t.Fatal("Run was not called")
	}
	if code != ExitUsage {
		t.Errorf("exit %d, want %d", code, ExitUsage)
	}
}

func TestMainBadConfigIsUsageError(t *testing.T) {
	d, _ := daemon(t)
	path := filepath.Join(t.TempDir(), "gtund.toml")
	if err := os.WriteFile(path, []byte("[server]\nbogus = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"-c", path}, {"run", "-c", path}} {
		var code int
		withStdio(t, "", func() { code = d.Main(args) })
		if code != ExitUsage {
			t.Errorf("Main(%q) = exit %d, want %d", args, code, ExitUsage)
		}
	}
}

func TestMainExitCodes(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want int
	}{
		{"clean stop", nil, ExitOK},
		{"runtime failure", errors.New("tun: permission denied"), ExitRuntime},
		{"config error", &config.Error{File: "f", Line: 1, Key: "k", Msg: "bad"}, ExitUsage},
	}
	for _, c := range cases {
		d, _ := daemon(t)
		d.Run = func(context.Context, string, <-chan struct{}) error { return c.err }
		var code int
		withStdio(t, "", func() { code = d.Main(nil) })
		if code != c.want {
			t.Errorf("%s: exit %d, want %d", c.name, code, c.want)
		}
	}
}

func TestMainUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--bogus"},
		{"-x"},
		{"-c"},                       // flag without its value
		{"-c", "a.toml", "extra"},    // stray argument
		{"frobnicate"},               // unknown command
		{"status", "--no-such-flag"}, // unknown status flag
	} {
		d, ran := daemon(t)
		var code int
		withStdio(t, "", func() { code = d.Main(args) })
		if code != ExitUsage {
			t.Errorf("Main(%q) = exit %d, want %d", args, code, ExitUsage)
		}
		if *ran {
			t.Errorf("Main(%q) ran the daemon", args)
		}
	}
}

func TestStatusNoDaemon(t *testing.T) {
	d, _ := daemon(t)
	sock := filepath.Join(t.TempDir(), "none.sock")
	var code int
	withStdio(t, "", func() { code = d.Main([]string{"status", "--socket", sock}) })
	if code != ExitRuntime {
		t.Errorf("status without a daemon = exit %d, want %d", code, ExitRuntime)
	}
}

func TestSocketFromConfig(t *testing.T) {
	d, _ := daemon(t)
	dir := t.TempDir()
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		path, want string
		fails      bool
	}{
		{write("set.toml", "[server]\ncontrol_socket = \"/tmp/x.sock\"\nbogus = 1\n"), "/tmp/x.sock", false}, // other keys do not matter
		{write("unset.toml", "[server]\npool = \"100.64.240.0/24\"\n"), d.DefaultSocket, false},
		{filepath.Join(dir, "missing.toml"), d.DefaultSocket, false},
		{write("broken.toml", "[server\n"), "", true},
	}
	for _, c := range cases {
		got, err := d.socketFromConfig(c.path)
		if (err != nil) != c.fails || got != c.want {
			t.Errorf("socketFromConfig(%s) = %q, %v; want %q (fails %v)", c.path, got, err, c.want, c.fails)
		}
	}
}
