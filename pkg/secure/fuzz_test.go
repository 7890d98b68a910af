package secure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/flynn/noise"
)

// wireConn is a net.Conn that reads from fixed bytes (what a hostile peer
// sent) and keeps what is written to it.
type wireConn struct {
	r   io.Reader
	out bytes.Buffer
}

func (c *wireConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c *wireConn) Write(p []byte) (int, error)        { return c.out.Write(p) }
func (c *wireConn) Close() error                       { return nil }
func (c *wireConn) LocalAddr() net.Addr                { return &net.TCPAddr{} }
func (c *wireConn) RemoteAddr() net.Addr               { return &net.TCPAddr{} }
func (c *wireConn) SetDeadline(t time.Time) error      { return nil }
func (c *wireConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *wireConn) SetWriteDeadline(t time.Time) error { return nil }

// Fixed keys, so that the seeds (sealed with them) stay valid between runs
// and the fuzzer mutates records the reader can actually open.
var (
	fuzzRecordKey = [32]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	fuzzServerKey = PrivateKey{0x40, 1, 2, 3, 4, 5, 6, 7, 8}
	fuzzClientKey = PrivateKey{0x50, 9, 8, 7, 6, 5, 4, 3, 2}
)

// sealedRecords returns the wire bytes of records as a Conn with
// fuzzRecordKey writes them; with rekey, it updates its key before each
// record after the first.
func sealedRecords(t testing.TB, c Ciphers, rekey bool, recs ...[]byte) []byte {
	w := &wireConn{r: bytes.NewReader(nil)}
	conn, err := newConn(w, c, fuzzRecordKey, fuzzRecordKey)
	if err != nil {
		t.Fatal(err)
	}
	if rekey {
		conn.limits.rekeyRecords = 1
	}
	for _, r := range recs {
		if err := conn.WriteRecord(r[0], r[1:]); err != nil {
			t.Fatal(err)
		}
	}
	return w.out.Bytes()
}

// FuzzReadRecord feeds arbitrary wire bytes to the record reader: frame
// decoding must refuse what is not a record sealed with the session's key
// without panicking, allocating what a length prefix claims, or returning
// more than a record can hold; key updates are consumed, never returned.
func FuzzReadRecord(f *testing.F) {
	f.Add([]byte{}, false)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, false)
	f.Add([]byte{0, 0, 0, 17, 1}, true)
	f.Add(sealedRecords(f, ChaCha20Poly1305, false, []byte{TypeControl, '{', '}'}, []byte{TypePacket, 0x45, 0, 0, 20}), false)
	f.Add(sealedRecords(f, AES128GCM, false, []byte{TypeControl, 'h', 'i'}, []byte{0, '!'}), true) // 0: no record type
	f.Add(sealedRecords(f, AES128GCM, true, []byte{TypeControl, '{', '}'}, []byte{TypePacket, 0x45, 0, 0, 20}, []byte{9, '!'}), true)
	f.Fuzz(func(t *testing.T, wire []byte, aes bool) {
		c := ChaCha20Poly1305
		if aes {
			c = AES128GCM
		}
		conn, err := newConn(&wireConn{r: bytes.NewReader(wire)}, c, fuzzRecordKey, fuzzRecordKey)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, maxRecordCipher)
		var asked int
		for i := 0; ; i++ {
			typ, payload, err := conn.ReadRecord(func(n int) []byte {
				asked = n
				return buf
			})
			if err != nil {
				break
			}
			if typ == TypeKeyUpdate {
				t.Fatal("a key update record reached the caller")
			}
			if asked > maxRecordCipher || len(payload) > MaxRecordPlaintext {
				t.Fatalf("record of %d bytes (buffer asked %d) accepted", len(payload), asked)
			}
			if i > len(wire) {
				t.Fatal("more records than input bytes")
			}
		}
	})
}

// FuzzServerHandshake feeds arbitrary bytes to the responder as a client's
// first handshake message: it must refuse them without panicking, and
// never call Authorize with a key it has not authenticated.
func FuzzServerHandshake(f *testing.F) {
	valid := clientInit(f, fuzzClientKey, validPayload(ProtocolVersion, 1, ChaCha20Poly1305))
	f.Add(valid)
	f.Add([]byte{0, 0})
	f.Add([]byte{0xff, 0xff})
	f.Add([]byte{0, 1, 0})
	f.Add(append([]byte{0, 96}, make([]byte, 96)...))
	f.Fuzz(func(t *testing.T, wire []byte) {
		w := &wireConn{r: bytes.NewReader(wire)}
		authorized := false
		c, key, err := Server(w, ServerConfig{Private: fuzzServerKey, Ciphers: ChaCha20Poly1305 | AES128GCM,
			Authorize: func(k PublicKey, _ uint64) error {
				authorized = true
				return nil
			}})
		if authorized && key == (PublicKey{}) {
			t.Fatal("Authorize called without a client key")
		}
		if err == nil && (c == nil || !authorized) {
			t.Fatal("handshake accepted without authorization")
		}
		if err == nil && key != fuzzClientKey.Public() {
			// Only the one key the fuzzer can impersonate: Noise IK proves
			// the key, so any other key accepted would be a forgery.
			t.Fatalf("accepted key %s", key)
		}
	})
}

// validPayload is a well-formed first-message payload.
func validPayload(version uint16, ts uint64, offer Ciphers) []byte {
	p := make([]byte, 15)
	copy(p, payloadMagic)
	binary.BigEndian.PutUint16(p[4:], version)
	binary.BigEndian.PutUint64(p[6:], ts)
	p[14] = byte(offer)
	return p
}

// clientInit is a length-prefixed first message (Noise IK and mac1) from
// key to fuzzServerKey carrying payload.
func clientInit(t testing.TB, key PrivateKey, payload []byte) []byte {
	pub, spub := key.Public(), fuzzServerKey.Public()
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: cipherSuite, Pattern: noise.HandshakeIK, Initiator: true, Prologue: []byte(prologue),
		StaticKeypair: noise.DHKey{Private: key[:], Public: pub[:]}, PeerStatic: spub[:],
		// A fixed ephemeral key keeps the seed deterministic.
		EphemeralKeypair: noise.DHKey{Private: bytes.Repeat([]byte{7}, 32), Public: mustPublic(bytes.Repeat([]byte{7}, 32))},
	})
	if err != nil {
		t.Fatal(err)
	}
	msg, _, _, err := hs.WriteMessage(nil, payload)
	if err != nil {
		t.Fatal(err)
	}
	mk := mac1Key(spub)
	return frame(appendMAC1(msg, &mk))
}

func mustPublic(priv []byte) []byte {
	var k PrivateKey
	copy(k[:], priv)
	p := k.Public()
	return p[:]
}

// FuzzHandshakePayload sends a properly encrypted first message whose
// payload (magic, version, timestamp, cipher offer) is arbitrary: the
// server must accept exactly the well-formed ones, hand Authorize the
// timestamp they carry, and pick a cipher the client offered.
func FuzzHandshakePayload(f *testing.F) {
	f.Add(validPayload(ProtocolVersion, 1, ChaCha20Poly1305))
	f.Add(validPayload(ProtocolVersion, 1<<62, AES128GCM|ChaCha20Poly1305))
	f.Add(validPayload(1, 5, ChaCha20Poly1305))
	f.Add(validPayload(ProtocolVersion, 5, 0))
	f.Add([]byte("gtun"))
	f.Add([]byte("gtun\x00\x02"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		if len(payload) > maxHandshakeMsg-96-16 {
			return // would not fit one handshake message; the length check refuses it (FuzzServerHandshake)
		}
		w := &wireConn{r: bytes.NewReader(clientInit(t, fuzzClientKey, payload))}
		var gotTS uint64
		c, key, err := Server(w, ServerConfig{Private: fuzzServerKey, Ciphers: ChaCha20Poly1305 | AES128GCM,
			Authorize: func(k PublicKey, ts uint64) error {
				gotTS = ts
				if ts == 0 {
					return ErrReplay // what a server does: 0 is never newer than anything
				}
				return nil
			}})
		wellFormed := len(payload) == 15 && string(payload[:4]) == payloadMagic &&
			binary.BigEndian.Uint16(payload[4:]) == ProtocolVersion &&
			binary.BigEndian.Uint64(payload[6:]) != 0 && payload[14]&byte(ChaCha20Poly1305|AES128GCM) != 0
		if (err == nil) != wellFormed {
			t.Fatalf("payload %x: err %v, well-formed %v", payload, err, wellFormed)
		}
		if err != nil {
			var ve *VersionError
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrReplay) && !errors.As(err, &ve) {
				t.Fatalf("payload %x: unclassified error %v", payload, err)
			}
			return
		}
		if key != fuzzClientKey.Public() || gotTS != binary.BigEndian.Uint64(payload[6:]) {
			t.Fatalf("key %s ts %d", key, gotTS)
		}
		if Ciphers(payload[14])&c.cipher == 0 {
			t.Fatalf("chose %v, offered %v", c.cipher, Ciphers(payload[14]))
		}
	})
}
