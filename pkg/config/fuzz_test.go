package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gtun/gtun/pkg/secure"
)

// fuzzConfig runs load on src written to a file (with @KEY@ standing for a
// valid private key file): a config, however broken, must load or be
// refused with errors that are all config errors naming the file, never
// panic or fail in another way.
func fuzzConfig(f *testing.F, example string, load func(path string) error) {
	b, err := os.ReadFile(filepath.Join("..", "..", "etc", example))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(keyFileLine.ReplaceAllLiteralString(string(b), `private_key_file = "@KEY@"`))
	f.Add("[server]\nlisten = \"[::1]:0\"\npool = \"100.64.0.0/16\"\nprivate_key_file = \"@KEY@\"\n[[peer]]\nname = \"a\"\npublic_key = \"x\"\n")
	f.Add("[[server]]\nendpoints = [\"a:1\", 1]\n[client]\nprivate_key_file = \"@KEY@\"\n")
	f.Add("[server]\nlisten = \"[::]:9623\"\npool = \"100.64.0.0/30\"\npool6 = \"fd00::/126\"\nprivate_key_file = \"@KEY@\"\nroutes = [\"fd00:1::/33\", \"::/0\"]\nmap = [\"fd00:1::/33=fd00:3:8000::/33\", \"::ffff:10.0.0.0/104=10.0.0.0/8\"]\n[[peer]]\nname = \"a\"\npublic_key = \"x\"\naddress = \"fd00::2\"\nsubnets = [\"fe80::/10\"]\n")
	f.Add("[log]\nlevel = \"loud\"\nformat = 3\n[x.y]\nz = 1\n")
	f.Add("a = \"\\u0000\"\n[server\n")
	f.Add("[server]\nroutes = [\"10.0.0.0/8\", \"10.0.0.0/8\"]\nmtu = -1\nkeepalive = \"-5s\"\ndead_after = 1e9\n")
	dir := f.TempDir()
	key := filepath.Join(dir, "private.key")
	k, err := secureKey()
	if err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(key, []byte(k+"\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, src string) {
		path := filepath.Join(t.TempDir(), example)
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(src, "@KEY@", key)), 0o600); err != nil {
			t.Fatal(err)
		}
		err := load(path)
		if err == nil {
			return
		}
		leaves := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			leaves = j.Unwrap()
		}
		for _, e := range leaves {
			var ce *Error
			if !errors.As(e, &ce) {
				t.Fatalf("not a config error: %v", e)
			}
			if !strings.HasPrefix(e.Error(), path) {
				t.Fatalf("error does not name the file: %v", e)
			}
		}
	})
}

func secureKey() (string, error) {
	k, err := secure.GeneratePrivateKey()
	if err != nil {
		return "", err
	}
	return k.Encode(), nil
}

func FuzzLoadServer(f *testing.F) {
	fuzzConfig(f, "gtund.toml", func(p string) error { _, err := LoadServer(p); return err })
}

func FuzzLoadClient(f *testing.F) {
	fuzzConfig(f, "gtun.toml", func(p string) error { _, err := LoadClient(p); return err })
}
