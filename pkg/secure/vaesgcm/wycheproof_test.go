package vaesgcm

import (
	"bytes"
	"crypto/cipher"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gtun/gtun/internal/testnet"
)

// The Wycheproof test vectors (C2SP) are fetched by version as a Go module,
// as Go's own crypto tests fetch them (crypto/internal/cryptotest
// FetchModule), instead of being kept in testdata: this repository carries
// no copy of a third-party test corpus, while the go command verifies the
// module against the checksum database, so the version pinned here always
// yields the same bytes. It is the version golang.org/x/crypto's tests pin
// (the module proxy does not list the module's versions, so "latest"
// cannot be asked for).
const (
	wycheproofModule  = "github.com/C2SP/wycheproof"
	wycheproofVersion = "v0.0.0-20250901140545-b51abcfb8daf"
)

// fetchModule downloads module@version into the module cache (a no-op
// when it is there) and returns its directory. Without the go command or
// the network the test skips, or fails when CI is set.
func fetchModule(t *testing.T, module, version string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		testnet.Missing(t, "the go command, to fetch "+module+" ("+err.Error()+")")
	}
	cmd := exec.CommandContext(t.Context(), goTool, "mod", "download", "-json", module+"@"+version)
	// Outside this module, so that neither go.mod nor go.sum is touched.
	cmd.Dir = t.TempDir()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		testnet.Missing(t, fmt.Sprintf("%s@%s (go mod download: %v: %s %s)", module, version, err,
			strings.TrimSpace(stderr.String()), strings.TrimSpace(string(out))))
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		t.Fatalf("go mod download %s@%s: %v %s\n%s", module, version, err, m.Error, out)
	}
	return m.Dir
}

// wycheproofFile is the part of Wycheproof's AEAD test schema
// (aead_test_schema_v1.json) this test reads.
type wycheproofFile struct {
	Algorithm     string `json:"algorithm"`
	NumberOfTests int    `json:"numberOfTests"`
	TestGroups    []struct {
		KeySize int `json:"keySize"` // bits
		IVSize  int `json:"ivSize"`  // bits
		TagSize int `json:"tagSize"` // bits
		Tests   []struct {
			TcID    int      `json:"tcId"`
			Comment string   `json:"comment"`
			Flags   []string `json:"flags"`
			Key     string   `json:"key"`
			IV      string   `json:"iv"`
			AAD     string   `json:"aad"`
			Msg     string   `json:"msg"`
			CT      string   `json:"ct"`
			Tag     string   `json:"tag"`
			Result  string   `json:"result"` // valid, invalid or acceptable
		} `json:"tests"`
	} `json:"testGroups"`
}

// TestWycheproof runs every AES-GCM vector with a 128-bit key, a 96-bit IV
// and a 128-bit tag (what this AEAD implements), valid and invalid:
// a valid one must seal to its ciphertext and tag and open to its message,
// an invalid one must not open and not be what sealing its message gives.
// crypto/cipher runs the same as a control: if it disagrees with a vector,
// the reading of the file is wrong, not the assembly.
func TestWycheproof(t *testing.T) {
	requireAsm(t)
	dir := fetchModule(t, wycheproofModule, wycheproofVersion)
	raw, err := os.ReadFile(filepath.Join(dir, "testvectors_v1", "aes_gcm_test.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file wycheproofFile
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatalf("aes_gcm_test.json: %v", err)
	}
	if file.Algorithm != "AES-GCM" {
		t.Fatalf("aes_gcm_test.json is for %q", file.Algorithm)
	}

	ran := map[string]int{}
	total := 0
	for _, g := range file.TestGroups {
		total += len(g.Tests)
		if g.KeySize != 128 || g.IVSize != 96 || g.TagSize != 128 {
			continue
		}
		for _, tc := range g.Tests {
			key, nonce, ad := unhex(tc.Key), unhex(tc.IV), unhex(tc.AAD)
			msg, record := unhex(tc.Msg), append(unhex(tc.CT), unhex(tc.Tag)...)
			name := fmt.Sprintf("tcId %d (%s; %s %s)", tc.TcID, tc.Result, strings.Join(tc.Flags, ","), tc.Comment)
			v, s := newPair(t, key)
			// problem says how a's behaviour departs from the vector.
			problem := func(a cipher.AEAD) string {
				sealed := a.Seal(nil, nonce, msg, ad)
				opened, err := a.Open(nil, nonce, record, ad)
				switch tc.Result {
				case "valid":
					if !bytes.Equal(sealed, record) {
						return fmt.Sprintf("Seal = %x, want %x", sealed, record)
					}
					if err != nil || !bytes.Equal(opened, msg) {
						return fmt.Sprintf("Open: %v, message equal %v", err, bytes.Equal(opened, msg))
					}
				case "invalid":
					if err == nil {
						return "Open accepted it"
					}
					if bytes.Equal(sealed, record) {
						return "Seal produced the invalid record"
					}
				default:
					// "acceptable" (none for AES-GCM so far): only agree
					// with crypto/cipher.
					if _, stdErr := s.Open(nil, nonce, record, ad); (err == nil) != (stdErr == nil) {
						return fmt.Sprintf("Open: %v, crypto/cipher's: %v", err, stdErr)
					}
				}
				return ""
			}
			if bad := problem(s); bad != "" {
				t.Fatalf("%s: crypto/cipher, the control, fails: %s (the test reads the vectors wrong)", name, bad)
			}
			if bad := problem(v); bad != "" {
				t.Errorf("%s: %s", name, bad)
			}
			ran[tc.Result]++
		}
	}
	if total != file.NumberOfTests {
		t.Fatalf("read %d vectors, the file says %d", total, file.NumberOfTests)
	}
	if ran["valid"] == 0 || ran["invalid"] == 0 {
		t.Fatalf("ran %v of %d vectors: the file has no AES-128 96-bit-IV vectors of both kinds", ran, total)
	}
	t.Logf("Wycheproof %s: ran %v of %d AES-GCM vectors (the rest have other key or IV sizes)", wycheproofVersion, ran, total)
}
