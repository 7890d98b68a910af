// Package secure authenticates both ends of a gtun connection with a Noise IK
// handshake over static Curve25519 keys (the model WireGuard made familiar) and
// then seals every byte of the stream with an AEAD keyed by that handshake.
package secure

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// KeySize is the length of a Curve25519 private or public key.
const KeySize = 32

// Key is a Curve25519 key, printed as standard base64 like WireGuard's keys.
type Key [KeySize]byte

// PrivateKey is a static Curve25519 private key.
type PrivateKey Key

// PublicKey is a static Curve25519 public key.
type PublicKey Key

// GeneratePrivateKey returns a new clamped Curve25519 private key.
func GeneratePrivateKey() (PrivateKey, error) {
	var k PrivateKey
	if _, err := io.ReadFull(rand.Reader, k[:]); err != nil {
		return k, fmt.Errorf("read random: %w", err)
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// Public derives the public key.
func (k PrivateKey) Public() PublicKey {
	var p PublicKey
	out, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		// X25519 only fails for low-order points, which the basepoint is not.
		panic(err)
	}
	copy(p[:], out)
	return p
}

// String, GoString, LogValue and MarshalText keep a private key out of
// logs and JSON whatever the handler or verb: fmt, slog's text and JSON
// handlers and encoding/json all print "(private key)". Encode is the one
// way to its text, for key files.
func (k PrivateKey) String() string               { return redacted }
func (k PrivateKey) GoString() string             { return redacted }
func (k PrivateKey) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (k PrivateKey) MarshalText() ([]byte, error) { return []byte(redacted), nil }

const redacted = "(private key)"

// Encode returns the base64 text of the private key, for key files only.
func (k PrivateKey) Encode() string { return base64.StdEncoding.EncodeToString(k[:]) }

func (p PublicKey) String() string { return base64.StdEncoding.EncodeToString(p[:]) }

// Short is a log-friendly prefix of the public key that identifies a peer
// without printing the whole key.
func (p PublicKey) Short() string { return p.String()[:8] }

func decodeKey(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return k, fmt.Errorf("not base64: %w", err)
	}
	if len(b) != KeySize {
		return k, fmt.Errorf("key is %d bytes, want %d", len(b), KeySize)
	}
	copy(k[:], b)
	return k, nil
}

// ParsePublicKey parses a base64 public key.
func ParsePublicKey(s string) (PublicKey, error) {
	k, err := decodeKey(s)
	if err != nil {
		return PublicKey{}, err
	}
	if k == (Key{}) {
		return PublicKey{}, errors.New("key is all zeros")
	}
	return PublicKey(k), nil
}

// ParsePrivateKey parses a base64 private key.
func ParsePrivateKey(s string) (PrivateKey, error) {
	k, err := decodeKey(s)
	if err != nil {
		return PrivateKey{}, err
	}
	if k == (Key{}) {
		return PrivateKey{}, errors.New("key is all zeros")
	}
	return PrivateKey(k), nil
}

// LoadPrivateKeyFile reads a private key file, refusing one that group or
// others can read: a leaked static key lets anyone impersonate this host.
func LoadPrivateKeyFile(path string) (PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return PrivateKey{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return PrivateKey{}, err
	}
	if st.IsDir() {
		return PrivateKey{}, fmt.Errorf("%s is a directory", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return PrivateKey{}, fmt.Errorf("%s has mode %04o: private key must not be readable by group or others (chmod 600)", path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, 1024))
	if err != nil {
		return PrivateKey{}, err
	}
	k, err := ParsePrivateKey(string(bytes.TrimSpace(b)))
	if err != nil {
		return PrivateKey{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
