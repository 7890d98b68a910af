package secure

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func mustKey(t testing.TB) PrivateKey {
	t.Helper()
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// pair runs both handshake sides over a real loopback TCP connection.
func pair(t testing.TB, ccfg ClientConfig, scfg ServerConfig) (*Conn, *Conn, error, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var sc *Conn
	var serr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			serr = err
			return
		}
		sc, _, serr = Server(c, scfg)
		if serr != nil {
			c.Close()
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc, cerr := Client(raw, ccfg)
	if cerr != nil {
		raw.Close()
	}
	wg.Wait()
	t.Cleanup(func() {
		if cc != nil {
			cc.Close()
		}
		if sc != nil {
			sc.Close()
		}
	})
	return cc, sc, cerr, serr
}

func allowOnly(k PublicKey) func(PublicKey, uint64) error {
	return func(p PublicKey, _ uint64) error {
		if p != k {
			return ErrUnknownPeer
		}
		return nil
	}
}

func TestRoundTrip(t *testing.T) {
	ck, sk := mustKey(t), mustKey(t)
	cc, sc, cerr, serr := pair(t, ClientConfig{Private: ck, ServerKey: sk.Public()},
		ServerConfig{Private: sk, Authorize: allowOnly(ck.Public())})
	if cerr != nil || serr != nil {
		t.Fatalf("client %v server %v", cerr, serr)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), MaxRecordPlaintext/16) // the largest record
	go func() { cc.WriteRecord(TypeControl, big) }()
	if typ, got, err := readRecord(sc); err != nil || typ != TypeControl || !bytes.Equal(got, big) {
		t.Fatalf("type %d, %d bytes, %v: payload differs", typ, len(got), err)
	}
	if err := sc.WriteRecord(TypeControl, []byte("pong")); err != nil {
		t.Fatal(err)
	}
	if typ, got, err := readRecord(cc); err != nil || typ != TypeControl || string(got) != "pong" {
		t.Fatalf("got type %d %q %v", typ, got, err)
	}
}

// readRecord reads c's next record into a buffer of its own.
func readRecord(c *Conn) (byte, []byte, error) {
	return c.ReadRecord(func(n int) []byte { return make([]byte, n) })
}

// A refused client gets silence: no reply, the connection held until the
// server's deadline. The client's error says what may be wrong.
func TestUnknownPeerRefused(t *testing.T) {
	ck, sk, other := mustKey(t), mustKey(t), mustKey(t)
	start := time.Now()
	_, _, cerr, serr := pair(t, ClientConfig{Private: ck, ServerKey: sk.Public()},
		ServerConfig{Private: sk, Authorize: allowOnly(other.Public()), Timeout: 300 * time.Millisecond})
	if !errors.Is(serr, ErrUnknownPeer) {
		t.Fatalf("server error %v, want ErrUnknownPeer", serr)
	}
	if !errors.Is(cerr, ErrNoAnswer) {
		t.Fatalf("client error %v, want ErrNoAnswer", cerr)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("refused after %v, before the server's deadline", d)
	}
}

func TestWrongServerKeyRefused(t *testing.T) {
	ck, sk, other := mustKey(t), mustKey(t), mustKey(t)
	_, _, cerr, serr := pair(t, ClientConfig{Private: ck, ServerKey: other.Public()},
		ServerConfig{Private: sk, Authorize: allowOnly(ck.Public()), Timeout: 300 * time.Millisecond})
	if !errors.Is(cerr, ErrNoAnswer) || !errors.Is(serr, ErrBadMAC1) {
		t.Fatalf("client %v server %v", cerr, serr)
	}
}

func TestVersionMismatchBothSides(t *testing.T) {
	ck, sk := mustKey(t), mustKey(t)
	_, _, cerr, serr := pair(t, ClientConfig{Private: ck, ServerKey: sk.Public(), Version: 99},
		ServerConfig{Private: sk, Authorize: allowOnly(ck.Public())})
	var cv, sv *VersionError
	if !errors.As(cerr, &cv) || !errors.As(serr, &sv) {
		t.Fatalf("client %v server %v", cerr, serr)
	}
	if cv.Local != 99 || cv.Remote != ProtocolVersion || sv.Remote != 99 {
		t.Fatalf("client %+v server %+v", cv, sv)
	}
}

func TestReplayedHandshakeRefused(t *testing.T) {
	ck, sk := mustKey(t), mustKey(t)
	var last uint64
	auth := func(p PublicKey, ts uint64) error {
		if ts <= last {
			return ErrReplay
		}
		last = ts
		return nil
	}
	fixed := time.Unix(1700000000, 0)
	now := func() time.Time { return fixed }
	if _, _, cerr, serr := pair(t, ClientConfig{Private: ck, ServerKey: sk.Public(), Now: now}, ServerConfig{Private: sk, Authorize: auth}); cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	// Same timestamp again, as a replayed first message would carry.
	_, _, cerr, serr := pair(t, ClientConfig{Private: ck, ServerKey: sk.Public(), Now: now}, ServerConfig{Private: sk, Authorize: auth, Timeout: 300 * time.Millisecond})
	if !errors.Is(serr, ErrReplay) || !errors.Is(cerr, ErrNoAnswer) {
		t.Fatalf("server error %v, want ErrReplay; client error %v, want ErrNoAnswer", serr, cerr)
	}
}

func TestTamperedRecordRejected(t *testing.T) {
	ck, sk := mustKey(t), mustKey(t)
	cc, sc, cerr, serr := pair(t, ClientConfig{Private: ck, ServerKey: sk.Public()}, ServerConfig{Private: sk, Authorize: allowOnly(ck.Public())})
	if cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	// Write a record with a flipped bit straight to the underlying socket.
	rec := make([]byte, 4+6+tagSize)
	binary.BigEndian.PutUint32(rec, uint32(6+tagSize))
	sealed := cc.send.aead.Seal(rec[:4], cc.send.nextNonce(), append([]byte{TypeControl}, "hello"...), rec[:4])
	sealed[6] ^= 1
	cc.conn.Write(sealed)
	if _, _, err := readRecord(sc); err == nil || !strings.Contains(err.Error(), "open record 0") {
		t.Fatalf("tampered record: got %v, want a record that does not open", err)
	}
}

func TestOversizedLengthRejected(t *testing.T) {
	ck, sk := mustKey(t), mustKey(t)
	cc, sc, cerr, serr := pair(t, ClientConfig{Private: ck, ServerKey: sk.Public()}, ServerConfig{Private: sk, Authorize: allowOnly(ck.Public())})
	if cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	cc.conn.Write([]byte{0xff, 0xff, 0xff, 0xff})
	if _, _, err := readRecord(sc); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("got %v, want ErrRecordTooLarge", err)
	}
}

func TestKeyFilePermissions(t *testing.T) {
	k := mustKey(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "k")
	if err := os.WriteFile(p, []byte(k.Encode()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPrivateKeyFile(p); err == nil {
		t.Fatal("world-readable key accepted")
	}
	os.Chmod(p, 0o600)
	got, err := LoadPrivateKeyFile(p)
	if err != nil || got != k {
		t.Fatalf("load: %v", err)
	}
	if _, err := ParsePublicKey("AAAA"); err == nil {
		t.Fatal("short key accepted")
	}
}

func TestCipherNegotiation(t *testing.T) {
	ck, sk := mustKey(t), mustKey(t)
	for _, c := range []struct {
		offer, accept, want Ciphers
	}{
		{ChaCha20Poly1305, 0, ChaCha20Poly1305},
		{ChaCha20Poly1305 | AES128GCM, AES128GCM | ChaCha20Poly1305, AES128GCM},
		{AES128GCM, ChaCha20Poly1305 | AES128GCM, AES128GCM},
		{ChaCha20Poly1305 | AES128GCM, ChaCha20Poly1305, ChaCha20Poly1305},
	} {
		cc, sc, cerr, serr := pair(t, ClientConfig{Private: ck, ServerKey: sk.Public(), Ciphers: c.offer},
			ServerConfig{Private: sk, Ciphers: c.accept, Authorize: allowOnly(ck.Public())})
		if cerr != nil || serr != nil {
			t.Fatalf("%v/%v: client %v server %v", c.offer, c.accept, cerr, serr)
		}
		if cc.Cipher() != c.want.String() || sc.Cipher() != c.want.String() {
			t.Errorf("offer %v accept %v: client %s server %s, want %v", c.offer, c.accept, cc.Cipher(), sc.Cipher(), c.want)
		}
		go cc.WriteRecord(TypeControl, []byte("ping"))
		if _, got, err := readRecord(sc); err != nil || string(got) != "ping" {
			t.Errorf("%v: %q %v", c.want, got, err)
		}
	}
	_, _, cerr, serr := pair(t, ClientConfig{Private: ck, ServerKey: sk.Public(), Ciphers: AES128GCM},
		ServerConfig{Private: sk, Ciphers: ChaCha20Poly1305, Authorize: allowOnly(ck.Public()), Timeout: 300 * time.Millisecond})
	if cerr == nil || serr == nil || !strings.Contains(serr.Error(), "no common cipher") {
		t.Fatalf("no common cipher: client %v server %v", cerr, serr)
	}
}

// A client of another protocol version is told so even if the rest of its
// handshake payload has another layout.
func TestOldClientGetsVersionError(t *testing.T) {
	ck, sk := mustKey(t), mustKey(t)
	_, _, cerr, serr := pair(t, ClientConfig{Private: ck, ServerKey: sk.Public(), Version: 1},
		ServerConfig{Private: sk, Authorize: allowOnly(ck.Public())})
	var ve *VersionError
	if !errors.As(cerr, &ve) || !errors.As(serr, &ve) {
		t.Fatalf("client %v server %v", cerr, serr)
	}
}

func BenchmarkSealOpen(b *testing.B) {
	for _, c := range []Ciphers{ChaCha20Poly1305, AES128GCM} {
		for _, size := range []int{1400, 65536} {
			b.Run(fmt.Sprintf("%v/%d", c, size), func(b *testing.B) {
				ck, sk := mustKey(b), mustKey(b)
				send, _ := newConn(nil, c, [32]byte(ck), [32]byte(sk))
				recv, _ := newConn(nil, c, [32]byte(sk), [32]byte(ck))
				payload := make([]byte, size)
				out := make([]byte, 0, 4+size+tagSize)
				b.SetBytes(int64(len(payload)))
				b.ReportAllocs()
				for b.Loop() {
					rec := send.send.aead.Seal(out[:4], send.send.nextNonce(), payload, out[:4])
					if _, err := recv.recv.aead.Open(rec[4:4], recv.recv.nextNonce(), rec[4:], rec[:4]); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// Packet records and control records share one connection and keep order.
func TestPacketAndControlRecords(t *testing.T) {
	ck, sk := mustKey(t), mustKey(t)
	cc, sc, cerr, serr := pair(t, ClientConfig{Private: ck, ServerKey: sk.Public()}, ServerConfig{Private: sk, Authorize: allowOnly(ck.Public())})
	if cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	rec := func(payload string) []byte {
		b := make([]byte, PacketHeadroom+len(payload)+PacketTailroom)
		copy(b[PacketHeadroom:], payload)
		return b
	}
	go func() {
		cc.WriteRecord(TypeControl, []byte("control-1"))
		cc.WritePackets(rec("frame-1"), rec("frame-2"))
		cc.WriteRecord(TypeControl, []byte("control-2"))
	}()
	buf := make([]byte, 1+MaxRecordPlaintext+tagSize)
	get := func(int) []byte { return buf }
	for _, want := range []struct {
		typ  byte
		body string
	}{{TypeControl, "control-1"}, {TypePacket, "frame-1"}, {TypePacket, "frame-2"}, {TypeControl, "control-2"}} {
		typ, payload, err := sc.ReadRecord(get)
		if err != nil || typ != want.typ || string(payload) != want.body {
			t.Fatalf("got type %d %q %v, want type %d %q", typ, payload, err, want.typ, want.body)
		}
	}
	if err := cc.WritePackets(make([]byte, PacketHeadroom+PacketTailroom)); err == nil {
		t.Fatal("empty packet record accepted")
	}
}

// discard is a net.Conn that swallows writes, for the send-side benchmark.
type discard struct{ net.Conn }

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func BenchmarkWritePackets(b *testing.B) {
	ck, sk := mustKey(b), mustKey(b)
	c, _ := newConn(discard{}, AES128GCM, [32]byte(ck), [32]byte(sk))
	rec := make([]byte, PacketHeadroom+65000+PacketTailroom)
	b.SetBytes(65000)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.WritePackets(rec); err != nil {
			b.Fatal(err)
		}
	}
}

// A private key never reaches a log or JSON in any form: fmt verbs, slog's
// text and JSON handlers, encoding/json, nested in a struct.
func TestPrivateKeyNeverPrinted(t *testing.T) {
	k := mustKey(t)
	secret := k.Encode()
	hexed := fmt.Sprintf("%x", [32]byte(k))
	type holder struct {
		Key  PrivateKey
		Name string
	}
	var out bytes.Buffer
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
		fmt.Fprintf(&out, f+"\n", k)
		fmt.Fprintf(&out, f+"\n", holder{Key: k, Name: "x"})
	}
	for _, h := range []slog.Handler{slog.NewTextHandler(&out, nil), slog.NewJSONHandler(&out, nil)} {
		slog.New(h).Info("m", "key", k, "holder", holder{Key: k})
	}
	j, _ := json.Marshal(holder{Key: k})
	out.Write(j)
	if s := out.String(); strings.Contains(s, secret) || strings.Contains(s, hexed) || strings.Contains(s, fmt.Sprint(k[0], " ", k[1], " ", k[2])) ||
		strings.Contains(s, fmt.Sprint(k[0], ",", k[1], ",", k[2])) {
		t.Fatalf("private key printed:\n%s", s)
	}
}

// loopConn is a net.Conn whose reads return what was written to it, so
// that one goroutine can run a sender and a receiver over the same bytes.
type loopConn struct {
	net.Conn
	buf bytes.Buffer
}

func (c *loopConn) Write(p []byte) (int, error) { return c.buf.Write(p) }
func (c *loopConn) Read(p []byte) (int, error)  { return c.buf.Read(p) }

// BenchmarkRecordPath runs the whole record path of a data frame: sealed in
// place and written by WritePackets (batches of 64, as the session's writer
// sends them), read and opened in place by ReadRecord.
func BenchmarkRecordPath(b *testing.B) {
	for _, c := range []Ciphers{ChaCha20Poly1305, AES128GCM} {
		for _, size := range []int{1400, 65000} {
			b.Run(fmt.Sprintf("%v/%d", c, size), func(b *testing.B) {
				ck, sk := mustKey(b), mustKey(b)
				wire := &loopConn{}
				send, _ := newConn(wire, c, [32]byte(ck), [32]byte(sk))
				recv, _ := newConn(wire, c, [32]byte(sk), [32]byte(ck))
				const batch = 64
				recs := make([][]byte, batch)
				for i := range recs {
					recs[i] = make([]byte, PacketHeadroom+size+PacketTailroom)
				}
				rbuf := make([]byte, maxRecordCipher)
				get := func(int) []byte { return rbuf }
				b.SetBytes(int64(size * batch))
				b.ReportAllocs()
				for b.Loop() {
					if err := send.WritePackets(recs...); err != nil {
						b.Fatal(err)
					}
					for range batch {
						if _, _, err := recv.ReadRecord(get); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

// Silence to strangers: garbage, an impossible length, a first message
// without a valid mac1, an unknown key and a replayed message all get no
// byte back, and the server holds the connection, reading, until its
// deadline, exactly as for a client that says nothing.
func TestStrangersGetSilence(t *testing.T) {
	ck, sk, stranger := mustKey(t), mustKey(t), mustKey(t)
	r := NewResponder(ServerConfig{Private: sk, Authorize: allowOnly(ck.Public())})
	_, known, err := Initiate(ClientConfig{Private: ck, ServerKey: sk.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := r.Respond(known); err != nil { // seen once: sent again, it is a replay
		t.Fatal(err)
	}
	_, unknown, _ := Initiate(ClientConfig{Private: stranger, ServerKey: sk.Public()})
	_, wrongServer, _ := Initiate(ClientConfig{Private: ck, ServerKey: stranger.Public()})
	const hold = 400 * time.Millisecond
	for _, c := range []struct {
		name string
		send []byte
		want error
	}{
		{"nothing", nil, nil},
		{"half a length", []byte{0}, nil},
		{"length 0", []byte{0, 0, 1, 2}, ErrMalformed},
		{"length 65535", append([]byte{0xff, 0xff}, bytes.Repeat([]byte{1}, 4000)...), ErrMalformed},
		{"random behind a valid length", frame(bytes.Repeat([]byte{7}, 127)), ErrBadMAC1},
		{"another server's key", frame(wrongServer), ErrBadMAC1},
		{"unknown key", frame(unknown), ErrUnknownPeer},
		{"replayed", frame(known), ErrDuplicate},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		// The server reports the deadline it was given: the client's
		// clock starts at another moment (a loaded machine can run the
		// two goroutines far apart), so only the server's own deadline
		// says whether it closed early.
		deadline := make(chan time.Time, 1)
		done := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				deadline <- time.Time{}
				done <- err
				return
			}
			defer c.Close()
			d := time.Now().Add(hold)
			deadline <- d
			_, _, err = r.Accept(c, d)
			done <- err
		}()
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(c.send)
		// Generous: the server must close at its deadline, and a
		// connection still open long after it fails the read below.
		conn.SetReadDeadline(time.Now().Add(hold + 10*time.Second))
		n, rerr := io.Copy(io.Discard, conn)
		closed := time.Now()
		serr := <-done
		held := <-deadline
		conn.Close()
		ln.Close()
		if n != 0 || rerr != nil {
			t.Errorf("%s: read %d bytes, %v; want nothing, then EOF", c.name, n, rerr)
		}
		if closed.Before(held) {
			t.Errorf("%s: closed %v before the deadline: a stranger learns when its message was refused", c.name, held.Sub(closed))
		}
		if c.want != nil && !errors.Is(serr, c.want) {
			t.Errorf("%s: server error %v, want %v", c.name, serr, c.want)
		}
	}
}
