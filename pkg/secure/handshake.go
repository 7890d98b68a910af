package secure

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"github.com/flynn/noise"
	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/hkdf"
)

// ProtocolVersion is the gtun wire protocol version. It travels inside the
// first handshake message so that a mismatch is reported in words on both
// sides instead of surfacing as an opaque decryption failure. Version 3
// added mac1 to the first message (a server of version 3 or later answers
// an older client with silence, as it does any message without a valid
// mac1), record keys that rotate (key update records) and masked nonces.
const ProtocolVersion uint16 = 3

// DefaultHandshakeTimeout bounds how long an unauthenticated connection may
// hold a server goroutine and socket.
const DefaultHandshakeTimeout = 5 * time.Second

const (
	// MAC1Size is the length of the mac1 that ends every first message.
	MAC1Size = 16
	// maxHandshakeMsg bounds a handshake message (either direction).
	maxHandshakeMsg = 512
	// minNoiseInit is the shortest Noise IK first message: ephemeral key,
	// encrypted static key, and the tag of an empty payload.
	minNoiseInit = 32 + 32 + 16 + 16
	payloadMagic = "gtun"
	// prologue binds the handshake to this protocol family. It is deliberately
	// not versioned: the version is checked from the payload to give a clear error.
	prologue = "gtun noise IK"
	// mac1Label keys mac1 with the server's public key, as WireGuard does.
	mac1Label = "mac1----"
)

// Labels of Keys.Derive for the uses of one handshake: the keys the
// handshake yields are never used directly, so that each use has its own.
const (
	LabelStream   = "gtun stream"   // sealed records over an ordered stream (TCP, the KCP stream)
	LabelDatagram = "gtun datagram" // sealed datagrams
)

var cipherSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

// Handshake failures a server counts separately.
var (
	ErrUnknownPeer = errors.New("client key is not a known peer")
	ErrReplay      = errors.New("handshake timestamp not newer than the last one from this peer (replay?)")
	ErrMalformed   = errors.New("malformed handshake")
	// ErrBadMAC1 is a first message whose mac1 does not match this server's
	// public key: sent by a stranger, a scanner, or a client configured
	// with another server's key. It cost no DH.
	ErrBadMAC1 = errors.New("first handshake message without a valid mac1")
	// ErrDuplicate is a first message seen before, byte for byte: a
	// recorded message replayed. It cost no DH.
	ErrDuplicate = errors.New("first handshake message seen before (replayed)")
	// ErrNoAnswer is a client's view of a server that said nothing: a gtund
	// answers a key it does not know with silence.
	ErrNoAnswer = errors.New("no answer to the handshake: the server's public_key may not be the configured one, " +
		"this client's key may not be a peer of the server (or the server runs a gtun older than protocol 3), or the path is blocked")
)

// VersionError reports a protocol version mismatch.
type VersionError struct{ Local, Remote uint16 }

func (e *VersionError) Error() string {
	return fmt.Sprintf("protocol version mismatch: this side speaks %d, the other side %d", e.Local, e.Remote)
}

// RemoteError is a refusal the server explained in its handshake reply.
type RemoteError struct{ Reason string }

func (e *RemoteError) Error() string { return "server refused the handshake: " + e.Reason }

const (
	statusOK uint8 = iota
	statusVersion
)

// Keys is what a completed handshake yields, oriented for this side: Send
// seals what this side sends, Recv opens what it receives.
type Keys struct {
	Cipher     Ciphers
	Send, Recv [32]byte
}

// Derive returns independent keys for one use of the handshake (LabelStream,
// LabelDatagram): each direction's key is HKDF-Expand(SHA-256) of that
// direction's key with the label, so both sides derive the same pair.
func (k Keys) Derive(label string) Keys {
	return Keys{Cipher: k.Cipher, Send: expand(k.Send, label), Recv: expand(k.Recv, label)}
}

func expand(key [32]byte, label string) [32]byte {
	var out [32]byte
	// The Noise split keys are uniformly random, so they serve as HKDF's
	// pseudorandom key without an extract step.
	if _, err := io.ReadFull(hkdf.Expand(sha256.New, key[:], []byte(label)), out[:]); err != nil {
		panic(err) // 32 bytes are far below HKDF's limit
	}
	return out
}

// ClientConfig is what an initiator needs: its own key and the server's.
type ClientConfig struct {
	Private   PrivateKey
	ServerKey PublicKey
	Ciphers   Ciphers          // record ciphers offered; 0 means LocalCiphers()
	Version   uint16           // 0 means ProtocolVersion; tests set others
	Now       func() time.Time // handshake timestamp source; nil means time.Now
	Timeout   time.Duration    // 0 means DefaultHandshakeTimeout
}

// Initiation is a client's handshake in progress: its first message is
// sent, the server's reply awaited.
type Initiation struct {
	hs      *noise.HandshakeState
	offer   Ciphers
	version uint16
}

// Initiate starts a handshake with the server cfg names and returns the
// first message: the Noise IK message followed by mac1. Each call makes a
// new ephemeral key and timestamp, so a retry is never a duplicate.
func Initiate(cfg ClientConfig) (*Initiation, []byte, error) {
	version := cfg.Version
	if version == 0 {
		version = ProtocolVersion
	}
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	offer := cfg.Ciphers
	if offer == 0 {
		offer = LocalCiphers()
	}
	pub := cfg.Private.Public()
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   cipherSuite,
		Pattern:       noise.HandshakeIK,
		Initiator:     true,
		Prologue:      []byte(prologue),
		StaticKeypair: noise.DHKey{Private: cfg.Private[:], Public: pub[:]},
		PeerStatic:    cfg.ServerKey[:],
	})
	if err != nil {
		return nil, nil, fmt.Errorf("noise state: %w", err)
	}
	var payload [4 + 2 + 8 + 1]byte
	copy(payload[:], payloadMagic)
	binary.BigEndian.PutUint16(payload[4:], version)
	binary.BigEndian.PutUint64(payload[6:], uint64(now().UnixNano()))
	payload[14] = byte(offer)
	msg, _, _, err := hs.WriteMessage(make([]byte, 0, 128+MAC1Size), payload[:])
	if err != nil {
		return nil, nil, fmt.Errorf("write handshake: %w", err)
	}
	mk := mac1Key(cfg.ServerKey)
	msg = appendMAC1(msg, &mk)
	return &Initiation{hs: hs, offer: offer, version: version}, msg, nil
}

// Finish reads the server's reply (the Noise message, without framing) and
// returns the session keys. The reply proves the server holds the private
// key of the configured public key.
func (in *Initiation) Finish(reply []byte) (Keys, error) {
	rp, cs1, cs2, err := in.hs.ReadMessage(nil, reply)
	if err != nil {
		return Keys{}, fmt.Errorf("handshake reply does not authenticate as the configured server key: %w", err)
	}
	if len(rp) < 3 {
		return Keys{}, ErrMalformed
	}
	remoteVersion := binary.BigEndian.Uint16(rp)
	switch rp[2] {
	case statusOK:
	case statusVersion:
		return Keys{}, &VersionError{Local: in.version, Remote: remoteVersion}
	default:
		return Keys{}, &RemoteError{Reason: string(rp[3:])}
	}
	if remoteVersion != in.version {
		return Keys{}, &VersionError{Local: in.version, Remote: remoteVersion}
	}
	if len(rp) < 4 {
		return Keys{}, fmt.Errorf("%w: reply without cipher", ErrMalformed)
	}
	chosen := Ciphers(rp[3])
	if chosen&in.offer == 0 || chosen&(chosen-1) != 0 {
		return Keys{}, fmt.Errorf("%w: server chose cipher %#x, not one offered (%v)", ErrMalformed, rp[3], in.offer)
	}
	return Keys{Cipher: chosen, Send: cs1.UnsafeKey(), Recv: cs2.UnsafeKey()}, nil
}

// ServerConfig is what a responder needs.
type ServerConfig struct {
	Private PrivateKey
	Ciphers Ciphers       // record ciphers accepted; 0 means LocalCiphers()
	Version uint16        // 0 means ProtocolVersion
	Timeout time.Duration // 0 means DefaultHandshakeTimeout; for Server only
	// Authorize decides whether a client key may connect and refuses replays:
	// it must return ErrUnknownPeer or ErrReplay (possibly wrapped) to refuse.
	// It runs only after the first message has authenticated the key.
	Authorize func(client PublicKey, timestamp uint64) error
}

// mac1Key is BLAKE2s-256("mac1----" || server public key).
func mac1Key(server PublicKey) [32]byte {
	return blake2s.Sum256(append([]byte(mac1Label), server[:]...))
}

// appendMAC1 appends mac1 of msg to msg.
func appendMAC1(msg []byte, key *[32]byte) []byte {
	m := mac1Of(msg, key)
	return append(msg, m[:]...)
}

// mac1Of is BLAKE2s-128 keyed with key over msg.
func mac1Of(msg []byte, key *[32]byte) [MAC1Size]byte {
	h, err := blake2s.New128(key[:])
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	h.Write(msg)
	var out [MAC1Size]byte
	h.Sum(out[:0])
	return out
}

// Responder answers first messages for one server key. A server shares one
// across all its connections and transports, so that its replay filter
// sees every first message. Safe for concurrent use.
type Responder struct {
	cfg     ServerConfig
	pub     PublicKey
	mac1Key [32]byte
	macs    sync.Pool // of *mac1Hash keyed with mac1Key: CheckMAC1 allocates nothing
	seen    *seenFilter
	counts  counts
}

// NewResponder returns a responder for cfg.
func NewResponder(cfg ServerConfig) *Responder {
	if cfg.Version == 0 {
		cfg.Version = ProtocolVersion
	}
	if cfg.Ciphers == 0 {
		cfg.Ciphers = LocalCiphers()
	}
	pub := cfg.Private.Public()
	return &Responder{cfg: cfg, pub: pub, mac1Key: mac1Key(pub), seen: newSeenFilter(seenWindow, seenMax, time.Now)}
}

// CheckMAC1 reports whether msg1 ends in a valid mac1 for this server's
// key. It costs one BLAKE2s pass: it is the check before anything else.
func (r *Responder) CheckMAC1(msg1 []byte) bool {
	if len(msg1) < minNoiseInit+MAC1Size || len(msg1) > maxHandshakeMsg {
		return false
	}
	body := msg1[:len(msg1)-MAC1Size]
	m, _ := r.macs.Get().(*mac1Hash)
	if m == nil {
		h, err := blake2s.New128(r.mac1Key[:])
		if err != nil {
			panic(err) // a 32-byte key is always valid
		}
		m = &mac1Hash{h: h}
	}
	m.h.Reset() // back to the keyed initial state
	m.h.Write(body)
	ok := subtle.ConstantTimeCompare(m.h.Sum(m.sum[:0]), msg1[len(body):]) == 1
	r.macs.Put(m)
	return ok
}

// mac1Hash is a keyed hash and room for its sum, reused across checks.
type mac1Hash struct {
	h   hash.Hash
	sum [MAC1Size]byte
}

// Respond answers a client's first message (Noise IK and mac1, without
// framing). Before any DH it checks the length, mac1 and the replay
// filter (ErrMalformed, ErrBadMAC1, ErrDuplicate); then it authenticates
// the client's key and runs cfg.Authorize. On success it returns the reply
// to send, the keys and the client's key. When err is a *VersionError the
// reply is still to be sent: it tells an authenticated client in words.
// Every other error must be answered with silence.
func (r *Responder) Respond(msg1 []byte) (reply []byte, k Keys, client PublicKey, err error) {
	if len(msg1) < minNoiseInit+MAC1Size || len(msg1) > maxHandshakeMsg {
		r.counts.refuse(refusedMalformed)
		return nil, Keys{}, client, fmt.Errorf("%w: first message of %d bytes", ErrMalformed, len(msg1))
	}
	if !r.CheckMAC1(msg1) {
		r.counts.refuse(refusedBadMAC1)
		return nil, Keys{}, client, ErrBadMAC1
	}
	if !r.Remember(msg1) {
		return nil, Keys{}, client, ErrDuplicate
	}
	return r.RespondRemembered(msg1)
}

// respond is the DH part of Respond.
func (r *Responder) respond(msg []byte) ([]byte, Keys, PublicKey, error) {
	var client PublicKey
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   cipherSuite,
		Pattern:       noise.HandshakeIK,
		Initiator:     false,
		Prologue:      []byte(prologue),
		StaticKeypair: noise.DHKey{Private: r.cfg.Private[:], Public: r.pub[:]},
	})
	if err != nil {
		return nil, Keys{}, client, fmt.Errorf("noise state: %w", err)
	}
	payload, _, _, err := hs.ReadMessage(nil, msg)
	if err != nil {
		return nil, Keys{}, client, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	copy(client[:], hs.PeerStatic())
	// Only magic and version are read before the version is known to match,
	// so that any other version gets a clear answer.
	if len(payload) < 6 || string(payload[:4]) != payloadMagic {
		return nil, Keys{}, client, fmt.Errorf("%w: bad payload", ErrMalformed)
	}
	remoteVersion := binary.BigEndian.Uint16(payload[4:])
	var ts uint64
	if len(payload) >= 14 {
		ts = binary.BigEndian.Uint64(payload[6:])
	}
	if err := r.cfg.Authorize(client, ts); err != nil {
		return nil, Keys{}, client, err
	}
	var status [4]byte
	binary.BigEndian.PutUint16(status[:], r.cfg.Version)
	var chosen Ciphers
	if remoteVersion != r.cfg.Version {
		status[2] = statusVersion
	} else {
		if len(payload) != 15 {
			return nil, Keys{}, client, fmt.Errorf("%w: payload of %d bytes", ErrMalformed, len(payload))
		}
		if chosen = pickCipher(Ciphers(payload[14]), r.cfg.Ciphers); chosen == 0 {
			return nil, Keys{}, client, fmt.Errorf("%w: no common cipher (client offers %v, server accepts %v)", ErrMalformed, Ciphers(payload[14]), r.cfg.Ciphers)
		}
		status[3] = byte(chosen)
	}
	reply, cs1, cs2, err := hs.WriteMessage(make([]byte, 0, 128), status[:])
	if err != nil {
		return nil, Keys{}, client, fmt.Errorf("write handshake reply: %w", err)
	}
	if remoteVersion != r.cfg.Version {
		return reply, Keys{}, client, &VersionError{Local: r.cfg.Version, Remote: remoteVersion}
	}
	return reply, Keys{Cipher: chosen, Send: cs2.UnsafeKey(), Recv: cs1.UnsafeKey()}, client, nil
}

// UnderLoad reports that the replay filter filled up within the last
// window: first messages with a valid mac1 are arriving faster than
// clients reconnect. A datagram listener then asks for proof of the source
// address (a cookie) before it calls Respond.
func (r *Responder) UnderLoad() bool { return r.seen.underLoad() }

// Counts returns what the responder did with first messages.
func (r *Responder) Counts() HandshakeCounts { return r.counts.snapshot() }
