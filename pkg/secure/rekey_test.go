package secure

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The key schedule pinned to values computed apart from this code (RFC
// 5869 HKDF-Expand with HMAC-SHA256, one block, Python's hmac): a change of
// hash or label is a wire change and must show here.
func TestKeyScheduleKnownAnswers(t *testing.T) {
	var secret [32]byte
	for i := range secret {
		secret[i] = byte(i)
	}
	next := NextKey(secret)
	key, mask := epochKeys(secret)
	for _, c := range []struct {
		name, got, want string
	}{
		{"NextKey", hex.EncodeToString(next[:]), "c4ff273c6a492a282b43a5dfd4cdb62b7a88350960409e87bdac45f1b6675610"},
		{"record key", hex.EncodeToString(key[:]), "66edc1e9fb53d0ef32f8a7811e12bdcd9b24fffdaf8809bd59d72c6b38f4c43d"},
		{"nonce mask", hex.EncodeToString(mask[:]), "8fcc2e8fad3595aca4f22308"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %s, want %s", c.name, c.got, c.want)
		}
	}
}

// keyPair returns two distinct fixed secrets, for connections built
// without a handshake.
func keyPair() (a, b [32]byte) {
	for i := range a {
		a[i], b[i] = byte(i), byte(100+i)
	}
	return a, b
}

// loopPair is a sender and a receiver over one in-memory byte stream: what
// the sender writes, the receiver reads (single goroutine).
func loopPair(t testing.TB, c Ciphers, limits keyLimits) (send, recv *Conn, wire *loopConn) {
	t.Helper()
	a, b := keyPair()
	wire = &loopConn{}
	var err error
	if send, err = newConn(wire, c, a, b); err != nil {
		t.Fatal(err)
	}
	if recv, err = newConn(wire, c, b, a); err != nil {
		t.Fatal(err)
	}
	send.limits, recv.limits = limits, limits
	return send, recv, wire
}

// packetRec is a packet record buffer holding payload.
func packetRec(payload string) []byte {
	b := make([]byte, PacketHeadroom+len(payload)+PacketTailroom)
	copy(b[PacketHeadroom:], payload)
	return b
}

// readAll reads records until the stream ends and returns their payloads.
func readAll(t testing.TB, c *Conn) ([]string, error) {
	t.Helper()
	buf := make([]byte, maxRecordCipher)
	var got []string
	for {
		typ, payload, err := c.ReadRecord(func(int) []byte { return buf })
		if err != nil {
			return got, err
		}
		if typ == TypeKeyUpdate {
			t.Fatal("ReadRecord returned a key update record")
		}
		got = append(got, string(payload))
	}
}

// Both sides write at once, in batches and single records, while the
// other's reader lags: key updates happen with records of the old and the
// new key in flight in the socket buffers either way, and every record
// arrives, in order.
func TestKeyUpdateBothWaysInFlight(t *testing.T) {
	for _, c := range []Ciphers{ChaCha20Poly1305, AES128GCM} {
		t.Run(c.String(), func(t *testing.T) {
			ck, sk := mustKey(t), mustKey(t)
			cc, sc, cerr, serr := pair(t, ClientConfig{Private: ck, ServerKey: sk.Public(), Ciphers: c},
				ServerConfig{Private: sk, Ciphers: c, Authorize: allowOnly(ck.Public())})
			if cerr != nil || serr != nil {
				t.Fatal(cerr, serr)
			}
			const perKey, total = 5, 600
			for _, conn := range []*Conn{cc, sc} {
				conn.limits.rekeyRecords = perKey
			}
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			for _, conn := range []*Conn{cc, sc} {
				wg.Go(func() { // the writer: batches of 1..5 packets, a control record between
					for i := 0; i < total; {
						n := min(1+i%perKey, total-i)
						recs := make([][]byte, n)
						for j := range recs {
							recs[j] = packetRec(fmt.Sprintf("frame %d %s", i+j, strings.Repeat("x", (i+j)%700)))
						}
						if err := conn.WritePackets(recs...); err != nil {
							errs <- err
							return
						}
						i += n
						if i%50 == 0 {
							if err := conn.WriteRecord(TypeControl, []byte(fmt.Sprintf("control %d", i))); err != nil {
								errs <- err
								return
							}
						}
					}
				})
				wg.Go(func() { // the reader of the other side's records, started late
					time.Sleep(20 * time.Millisecond)
					buf := make([]byte, maxRecordCipher)
					for i := 0; i < total; {
						typ, payload, err := conn.ReadRecord(func(int) []byte { return buf })
						if err != nil {
							errs <- fmt.Errorf("read after %d frames: %w", i, err)
							return
						}
						switch {
						case typ == TypeControl && string(payload) == fmt.Sprintf("control %d", i):
						case typ == TypePacket && string(payload) == fmt.Sprintf("frame %d %s", i, strings.Repeat("x", i%700)):
							i++
						default:
							errs <- fmt.Errorf("after %d frames: type %d %.40q", i, typ, payload)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for _, side := range []struct {
				name     string
				from, to *Conn
			}{{"client to server", cc, sc}, {"server to client", sc, cc}} {
				sent, _ := side.from.Rekeys()
				_, received := side.to.Rekeys()
				// Each key seals at most perKey frames (and the update that ends it).
				if sent != received || sent < total/perKey-1 {
					t.Errorf("%s: %d key updates sent, %d received, want the same and at least %d", side.name, sent, received, total/perKey-1)
				}
				if side.from.send.epoch != sent || side.to.recv.epoch != sent {
					t.Errorf("%s: epochs %d and %d after %d updates", side.name, side.from.send.epoch, side.to.recv.epoch, sent)
				}
			}
		})
	}
}

// sealUpdate seals a key update record for epoch with payload under c's
// send key, as keyUpdateLocked does, without switching keys.
func sealUpdate(c *Conn, payload []byte) []byte {
	rec := make([]byte, recordHeader+1+len(payload), recordHeader+1+len(payload)+tagSize)
	rec[recordHeader] = TypeKeyUpdate
	copy(rec[recordHeader+1:], payload)
	return c.sealLocked(rec)
}

func epochBytes(e uint64) []byte { return binary.BigEndian.AppendUint64(nil, e) }

// A key update record that was tampered with, dropped, forged with the
// wrong epoch or the wrong size ends the connection with an error; none of
// them switches the receiver's key.
func TestKeyUpdateTampering(t *testing.T) {
	// The honest stream: "one" under epoch 0, the update, "two" under epoch 1.
	honest := func() (wire []byte, updateAt, updateLen int) {
		send, _, w := loopPair(t, AES128GCM, defaultKeyLimits)
		if err := send.WriteRecord(TypeControl, []byte("one")); err != nil {
			t.Fatal(err)
		}
		updateAt = w.buf.Len()
		send.SetRekeyInterval(MinRekeyInterval)
		send.sendKeyAt.Store(-int64(time.Hour)) // due now
		if err := send.WriteRecord(TypeControl, []byte("two")); err != nil {
			t.Fatal(err)
		}
		return w.buf.Bytes(), updateAt, recordHeader + 1 + keyUpdatePayload + tagSize
	}
	wire, at, n := honest()
	got, err := readFrom(t, wire)
	if err != io.EOF || len(got) != 2 || got[1] != "two" {
		t.Fatalf("honest stream: %q %v", got, err)
	}

	flip := func(i int) []byte {
		w := bytes.Clone(wire)
		w[i] ^= 0x10
		return w
	}
	// A forged update, sealed under the right key, numbered wrong or sized wrong.
	forged := func(payload []byte) []byte {
		send, _, w := loopPair(t, AES128GCM, defaultKeyLimits)
		send.WriteRecord(TypeControl, []byte("one"))
		w.buf.Write(sealUpdate(send, payload))
		send.WriteRecord(TypeControl, []byte("two"))
		return w.buf.Bytes()
	}
	for _, c := range []struct {
		name, want string
		wire       []byte
	}{
		{"bit flipped in the update's ciphertext", "open record 1 of key epoch 0", flip(at + recordHeader + 2)},
		{"bit flipped in the update's tag", "open record 1 of key epoch 0", flip(at + n - 1)},
		{"update dropped", "open record 1 of key epoch 0", append(bytes.Clone(wire[:at]), wire[at+n:]...)},
		{"update sent twice", "open record 0 of key epoch 1", append(bytes.Clone(wire[:at+n]), wire[at:]...)},
		{"update to epoch 2", "key update to epoch 2 after epoch 0", forged(epochBytes(2))},
		{"update to epoch 0", "key update to epoch 0 after epoch 0", forged(epochBytes(0))},
		{"update of 7 bytes", "key update of 7 bytes", forged(epochBytes(1)[:7])},
		{"update of 9 bytes", "key update of 9 bytes", forged(append(epochBytes(1), 0))},
	} {
		got, err := readFrom(t, c.wire)
		if err == nil || err == io.EOF || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %q, %v; want an error with %q", c.name, got, err, c.want)
		}
		if len(got) != 1 || got[0] != "one" {
			t.Errorf("%s: records before the failure: %q", c.name, got)
		}
	}
}

// readFrom reads wire's records with a fresh receiver of loopPair's keys,
// and checks that an error stays: the connection does not read on.
func readFrom(t *testing.T, wire []byte) ([]string, error) {
	t.Helper()
	_, recv, w := loopPair(t, AES128GCM, defaultKeyLimits)
	w.buf.Write(wire)
	got, err := readAll(t, recv)
	if _, _, again := recv.ReadRecord(func(n int) []byte { return make([]byte, n) }); again != err {
		t.Errorf("after %v the next read returned %v", err, again)
	}
	return got, err
}

// The send key is updated once it is rekey_interval old, at the next
// write: an idle connection keeps its key (and sends nothing) until then.
func TestRekeyByTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := keyPair()
		p1, p2 := net.Pipe()
		defer p1.Close()
		defer p2.Close()
		send, err := newConn(p1, AES128GCM, a, b)
		if err != nil {
			t.Fatal(err)
		}
		recv, err := newConn(p2, AES128GCM, b, a)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 16)
		go func() {
			buf := make([]byte, maxRecordCipher)
			for {
				_, payload, err := recv.ReadRecord(func(int) []byte { return buf })
				if err != nil {
					close(got)
					return
				}
				got <- string(payload)
			}
		}()
		write := func(s string) {
			t.Helper()
			if err := send.WriteRecord(TypeControl, []byte(s)); err != nil {
				t.Fatal(err)
			}
			if r := <-got; r != s {
				t.Fatalf("received %q, want %q", r, s)
			}
		}
		check := func(when string, sent uint64, age time.Duration) {
			t.Helper()
			s, _ := send.Rekeys()
			_, r := recv.Rekeys()
			if s != sent || r != sent || send.KeyAge() != age {
				t.Fatalf("%s: %d updates sent, %d received, key age %v; want %d and %v", when, s, r, send.KeyAge(), sent, age)
			}
		}

		if send.RekeyInterval() != DefaultRekeyInterval {
			t.Fatalf("interval %v before it is set", send.RekeyInterval())
		}
		send.SetRekeyInterval(time.Millisecond)
		if send.RekeyInterval() != MinRekeyInterval {
			t.Fatalf("interval 1ms taken as %v, want the minimum", send.RekeyInterval())
		}
		send.SetRekeyInterval(48 * time.Hour)
		if send.RekeyInterval() != MaxRekeyInterval {
			t.Fatalf("interval 48h taken as %v, want the maximum", send.RekeyInterval())
		}
		send.SetRekeyInterval(3 * time.Second)
		send.SetRekeyInterval(0) // keeps it
		write("first")
		time.Sleep(2999 * time.Millisecond)
		write("before the interval")
		check("just before the interval", 0, 2999*time.Millisecond)
		time.Sleep(time.Millisecond)
		write("at the interval")
		check("at the interval", 1, 0)
		time.Sleep(10 * time.Second) // idle: the key ages past its interval
		check("idle", 1, 10*time.Second)
		write("after idling")
		check("after idling", 2, 0)
		send.SetRekeyInterval(time.Hour) // a reload: applies to the key in use
		time.Sleep(59 * time.Minute)
		write("within the new interval")
		check("within the new interval", 2, 59*time.Minute)
	})
}

// The send key is updated before it seals more than its record or byte
// volume; the receiver follows every update.
func TestRekeyByVolume(t *testing.T) {
	big := uint64(1) << 40
	for _, c := range []struct {
		name    string
		limits  keyLimits
		records int
		size    int
		want    uint64
	}{
		// updates before records 11, 21, 31
		{"records", keyLimits{rekeyRecords: 10, rekeyBytes: big, maxRecords: big, maxBytes: big}, 35, 100, 3},
		// 9 records of 101 bytes (type and payload) fit 1000 bytes: updates before 10, 19, 28, 37
		{"bytes", keyLimits{rekeyRecords: big, rekeyBytes: 1000, maxRecords: big, maxBytes: big}, 45, 100, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			send, recv, _ := loopPair(t, ChaCha20Poly1305, c.limits)
			var want []string
			for i := range c.records {
				p := fmt.Sprintf("%0*d", c.size, i)
				want = append(want, p)
				if err := send.WritePackets(packetRec(p)); err != nil {
					t.Fatal(err)
				}
			}
			got, err := readAll(t, recv)
			if err != io.EOF || strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("received %d records (%v), want %d", len(got), err, len(want))
			}
			sent, _ := send.Rekeys()
			_, received := recv.Rekeys()
			if sent != c.want || received != c.want {
				t.Fatalf("%d updates sent, %d received, want %d", sent, received, c.want)
			}
		})
	}
}

// A sender whose key would pass a hard stop refuses to seal, and stays
// refused; with its updates working it never gets there.
func TestSendHardStop(t *testing.T) {
	never := uint64(1) << 40
	t.Run("records", func(t *testing.T) {
		send, _, wire := loopPair(t, AES128GCM, keyLimits{rekeyRecords: never, rekeyBytes: never, maxRecords: 10, maxBytes: never})
		for i := range 10 {
			if err := send.WriteRecord(TypeControl, []byte{byte(i)}); err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
		}
		n := wire.buf.Len()
		if err := send.WriteRecord(TypeControl, []byte("11")); !errors.Is(err, ErrKeyExhausted) {
			t.Fatalf("record 11: %v, want ErrKeyExhausted", err)
		}
		if err := send.WritePackets(packetRec("12")); !errors.Is(err, ErrKeyExhausted) {
			t.Fatalf("after the stop: %v, want ErrKeyExhausted", err)
		}
		if wire.buf.Len() != n || send.send.records != 10 {
			t.Fatalf("wrote %d bytes, sealed %d records past the stop", wire.buf.Len()-n, send.send.records-10)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		send, _, wire := loopPair(t, AES128GCM, keyLimits{rekeyRecords: never, rekeyBytes: never, maxRecords: never, maxBytes: 1000})
		if err := send.WritePackets(packetRec(strings.Repeat("a", 600)), packetRec(strings.Repeat("b", 600))); !errors.Is(err, ErrKeyExhausted) {
			t.Fatalf("1202 bytes: %v, want ErrKeyExhausted", err)
		}
		if wire.buf.Len() != 0 {
			t.Fatalf("wrote %d bytes", wire.buf.Len())
		}
	})
	t.Run("updates keep it away", func(t *testing.T) {
		// 10 records and the update that ends their key: 11, within the stop.
		send, recv, _ := loopPair(t, AES128GCM, keyLimits{rekeyRecords: 10, rekeyBytes: never, maxRecords: 11, maxBytes: never})
		for i := range 100 {
			if err := send.WritePackets(packetRec(fmt.Sprint(i))); err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
		}
		if got, err := readAll(t, recv); err != io.EOF || len(got) != 100 {
			t.Fatalf("received %d records: %v", len(got), err)
		}
	})
}

// A receiver ends the connection of a peer that keeps one key past the
// hard stop, whatever that peer's own limits are.
func TestReceiveHardStop(t *testing.T) {
	never := uint64(1) << 40
	for _, c := range []struct {
		name   string
		limits keyLimits
		size   int
	}{
		{"records", keyLimits{rekeyRecords: never, rekeyBytes: never, maxRecords: 10, maxBytes: never}, 10},
		{"bytes", keyLimits{rekeyRecords: never, rekeyBytes: never, maxRecords: never, maxBytes: 10 * 101}, 100},
	} {
		t.Run(c.name, func(t *testing.T) {
			send, recv, _ := loopPair(t, AES128GCM, defaultKeyLimits)
			send.limits = keyLimits{rekeyRecords: never, rekeyBytes: never, maxRecords: never, maxBytes: never} // never rekeys
			recv.limits = c.limits
			for i := range 20 {
				if err := send.WritePackets(packetRec(fmt.Sprintf("%0*d", c.size, i))); err != nil {
					t.Fatal(err)
				}
			}
			got, err := readAll(t, recv)
			if len(got) != 10 || !errors.Is(err, ErrKeyExhausted) || !strings.Contains(err.Error(), "without updating it") {
				t.Fatalf("received %d records, then %v; want 10 and ErrKeyExhausted", len(got), err)
			}
		})
	}
}

// Nonce masks are secret per session and per direction and change with
// every key: two sessions of the same two keys share none, and the first
// record of a session no longer has the public nonce 0.
func TestNonceMasksDiffer(t *testing.T) {
	ck, sk := mustKey(t), mustKey(t)
	seen := map[[nonceSize]byte]string{}
	note := func(m [nonceSize]byte, what string) {
		if m == ([nonceSize]byte{}) {
			t.Errorf("%s: zero mask", what)
		}
		if prev, dup := seen[m]; dup {
			t.Errorf("%s has the mask of %s", what, prev)
		}
		seen[m] = what
	}
	for i := range 2 {
		cc, sc, cerr, serr := pair(t, ClientConfig{Private: ck, ServerKey: sk.Public()}, ServerConfig{Private: sk, Authorize: allowOnly(ck.Public())})
		if cerr != nil || serr != nil {
			t.Fatal(cerr, serr)
		}
		if cc.send.mask != sc.recv.mask || sc.send.mask != cc.recv.mask {
			t.Fatalf("session %d: the two ends disagree on a mask", i)
		}
		note(cc.send.mask, fmt.Sprintf("session %d client to server", i))
		note(sc.send.mask, fmt.Sprintf("session %d server to client", i))
		if err := cc.send.update(); err != nil {
			t.Fatal(err)
		}
		note(cc.send.mask, fmt.Sprintf("session %d client to server, epoch 1", i))
	}
}

// Sealing and opening records stays free of allocations with key rotation
// in place (an update itself allocates its cipher, once per key).
func TestRecordPathAllocations(t *testing.T) {
	send, recv, _ := loopPair(t, AES128GCM, defaultKeyLimits)
	recs := [][]byte{packetRec(strings.Repeat("p", 1400)), packetRec(strings.Repeat("q", 1400))}
	buf := make([]byte, maxRecordCipher)
	get := func(int) []byte { return buf }
	allocs := testing.AllocsPerRun(200, func() {
		if err := send.WritePackets(recs...); err != nil {
			t.Fatal(err)
		}
		if err := send.WriteRecord(TypeControl, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, _, err := recv.ReadRecord(get); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round", allocs)
	}
}

// The nonce of record n under a key is that key's mask XOR n (n
// little-endian in the last 8 bytes), for every epoch.
func TestNonceIsMaskXorCounter(t *testing.T) {
	secret, _ := keyPair()
	var k keyState
	if err := k.start(AES128GCM, secret); err != nil {
		t.Fatal(err)
	}
	for epoch := range 3 {
		_, mask := epochKeys(secret)
		for _, n := range []uint64{0, 1, 255, 1<<32 + 5, maxKeyRecords - 1} {
			k.records = n
			want := mask
			for i := range 8 {
				want[4+i] ^= byte(n >> (8 * i))
			}
			if got := k.nextNonce(); !bytes.Equal(got, want[:]) || k.records != n+1 {
				t.Fatalf("epoch %d record %d: nonce %x, want %x", epoch, n, got, want)
			}
		}
		if err := k.update(); err != nil {
			t.Fatal(err)
		}
		secret = NextKey(secret)
	}
}

// BenchmarkKeyUpdate is the cost of one key update on the sending side:
// the key update record sealed, the next secret, record key and nonce mask
// derived, the cipher keyed.
func BenchmarkKeyUpdate(b *testing.B) {
	for _, c := range []Ciphers{ChaCha20Poly1305, AES128GCM} {
		b.Run(c.String(), func(b *testing.B) {
			send, _, _ := loopPair(b, c, defaultKeyLimits)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := send.keyUpdateLocked(0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
