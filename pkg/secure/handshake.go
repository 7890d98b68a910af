package secure

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/flynn/noise"
)

// ProtocolVersion is the gtun wire protocol version. It travels inside the
// first handshake message so that a mismatch is reported in words on both
// sides instead of surfacing as an opaque decryption failure.
const ProtocolVersion uint16 = 2

// DefaultHandshakeTimeout bounds how long an unauthenticated connection may
// hold a server goroutine and socket.
const DefaultHandshakeTimeout = 5 * time.Second

const (
	maxHandshakeMsg = 512
	payloadMagic    = "gtun"
	// prologue binds the handshake to this protocol family. It is deliberately
	// not versioned: the version is checked from the payload to give a clear error.
	prologue = "gtun noise IK"
)

var cipherSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

// Handshake failures a server counts separately.
var (
	ErrUnknownPeer = errors.New("client key is not a known peer")
	ErrReplay      = errors.New("handshake timestamp not newer than the last one from this peer (replay?)")
	ErrMalformed   = errors.New("malformed handshake")
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

// ClientConfig is what an initiator needs: its own key and the server's.
type ClientConfig struct {
	Private   PrivateKey
	ServerKey PublicKey
	Ciphers   Ciphers          // record ciphers offered; 0 means LocalCiphers()
	Version   uint16           // 0 means ProtocolVersion; tests set others
	Now       func() time.Time // handshake timestamp source; nil means time.Now
	Timeout   time.Duration    // 0 means DefaultHandshakeTimeout
}

// Client runs the initiator side of the handshake on conn and returns the
// sealed connection. On error the caller still owns conn.
func Client(conn net.Conn, cfg ClientConfig) (*Conn, error) {
	version := cfg.Version
	if version == 0 {
		version = ProtocolVersion
	}
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultHandshakeTimeout
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
		return nil, fmt.Errorf("noise state: %w", err)
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	defer conn.SetDeadline(time.Time{})

	offer := cfg.Ciphers
	if offer == 0 {
		offer = LocalCiphers()
	}
	var payload [4 + 2 + 8 + 1]byte
	copy(payload[:], payloadMagic)
	binary.BigEndian.PutUint16(payload[4:], version)
	binary.BigEndian.PutUint64(payload[6:], uint64(now().UnixNano()))
	payload[14] = byte(offer)
	msg, _, _, err := hs.WriteMessage(make([]byte, 2, 2+128), payload[:])
	if err != nil {
		return nil, fmt.Errorf("write handshake: %w", err)
	}
	binary.BigEndian.PutUint16(msg, uint16(len(msg)-2))
	if _, err := conn.Write(msg); err != nil {
		return nil, fmt.Errorf("send handshake: %w", err)
	}

	reply, err := readHandshakeMsg(conn)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errors.New("server closed the connection during the handshake: it does not accept this client's key, or its key is not the configured public_key")
		}
		return nil, fmt.Errorf("read handshake reply: %w", err)
	}
	rp, cs1, cs2, err := hs.ReadMessage(nil, reply)
	if err != nil {
		return nil, fmt.Errorf("handshake reply does not authenticate as the configured server key: %w", err)
	}
	if len(rp) < 3 {
		return nil, ErrMalformed
	}
	remoteVersion := binary.BigEndian.Uint16(rp)
	switch rp[2] {
	case statusOK:
	case statusVersion:
		return nil, &VersionError{Local: version, Remote: remoteVersion}
	default:
		return nil, &RemoteError{Reason: string(rp[3:])}
	}
	if remoteVersion != version {
		return nil, &VersionError{Local: version, Remote: remoteVersion}
	}
	if len(rp) < 4 {
		return nil, fmt.Errorf("%w: reply without cipher", ErrMalformed)
	}
	chosen := Ciphers(rp[3])
	if chosen&offer == 0 || chosen&(chosen-1) != 0 {
		return nil, fmt.Errorf("%w: server chose cipher %#x, not one offered (%v)", ErrMalformed, rp[3], offer)
	}
	return newConn(conn, chosen, cs1.UnsafeKey(), cs2.UnsafeKey())
}

// ServerConfig is what a responder needs.
type ServerConfig struct {
	Private PrivateKey
	Ciphers Ciphers       // record ciphers accepted; 0 means LocalCiphers()
	Version uint16        // 0 means ProtocolVersion
	Timeout time.Duration // 0 means DefaultHandshakeTimeout
	// Authorize decides whether a client key may connect and refuses replays:
	// it must return ErrUnknownPeer or ErrReplay (possibly wrapped) to refuse.
	// It runs only after the first message has authenticated the key.
	Authorize func(client PublicKey, timestamp uint64) error
}

// Server runs the responder side of the handshake. It keeps no state for a
// client that fails: everything allocated here is garbage once it returns.
// On error the caller still owns conn and should close it.
func Server(conn net.Conn, cfg ServerConfig) (*Conn, PublicKey, error) {
	version := cfg.Version
	if version == 0 {
		version = ProtocolVersion
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultHandshakeTimeout
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	defer conn.SetDeadline(time.Time{})

	msg, err := readHandshakeMsg(conn)
	if err != nil {
		return nil, PublicKey{}, err
	}
	pub := cfg.Private.Public()
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   cipherSuite,
		Pattern:       noise.HandshakeIK,
		Initiator:     false,
		Prologue:      []byte(prologue),
		StaticKeypair: noise.DHKey{Private: cfg.Private[:], Public: pub[:]},
	})
	if err != nil {
		return nil, PublicKey{}, fmt.Errorf("noise state: %w", err)
	}
	payload, _, _, err := hs.ReadMessage(nil, msg)
	if err != nil {
		return nil, PublicKey{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var client PublicKey
	copy(client[:], hs.PeerStatic())
	// Only magic and version are read before the version is known to match,
	// so that any other version gets a clear answer.
	if len(payload) < 6 || string(payload[:4]) != payloadMagic {
		return nil, client, fmt.Errorf("%w: bad payload", ErrMalformed)
	}
	remoteVersion := binary.BigEndian.Uint16(payload[4:])
	var ts uint64
	if len(payload) >= 14 {
		ts = binary.BigEndian.Uint64(payload[6:])
	}
	if err := cfg.Authorize(client, ts); err != nil {
		return nil, client, err
	}
	var reply [4]byte
	binary.BigEndian.PutUint16(reply[:], version)
	var chosen Ciphers
	if remoteVersion != version {
		reply[2] = statusVersion
	} else {
		if len(payload) != 15 {
			return nil, client, fmt.Errorf("%w: payload of %d bytes", ErrMalformed, len(payload))
		}
		accept := cfg.Ciphers
		if accept == 0 {
			accept = LocalCiphers()
		}
		if chosen = pickCipher(Ciphers(payload[14]), accept); chosen == 0 {
			return nil, client, fmt.Errorf("%w: no common cipher (client offers %v, server accepts %v)", ErrMalformed, Ciphers(payload[14]), accept)
		}
		reply[3] = byte(chosen)
	}
	out, cs1, cs2, err := hs.WriteMessage(make([]byte, 2, 2+128), reply[:])
	if err != nil {
		return nil, client, fmt.Errorf("write handshake reply: %w", err)
	}
	binary.BigEndian.PutUint16(out, uint16(len(out)-2))
	if _, err := conn.Write(out); err != nil {
		return nil, client, fmt.Errorf("send handshake reply: %w", err)
	}
	if remoteVersion != version {
		return nil, client, &VersionError{Local: version, Remote: remoteVersion}
	}
	c, err := newConn(conn, chosen, cs2.UnsafeKey(), cs1.UnsafeKey())
	return c, client, err
}

func readHandshakeMsg(conn net.Conn) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n == 0 || n > maxHandshakeMsg {
		return nil, fmt.Errorf("%w: message length %d", ErrMalformed, n)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(conn, msg); err != nil {
		return nil, err
	}
	return msg, nil
}
