package secure

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"
)

// The message-level handshake, as a datagram transport uses it: no
// connection, the two sides exchange byte slices.
func TestInitiateRespondFinish(t *testing.T) {
	ck, sk := mustKey(t), mustKey(t)
	r := NewResponder(ServerConfig{Private: sk, Authorize: allowOnly(ck.Public())})
	in, msg1, err := Initiate(ClientConfig{Private: ck, ServerKey: sk.Public()})
	if err != nil {
		t.Fatal(err)
	}
	// The layout other transports frame: 32 ephemeral, 48 static, 31
	// payload (15 and its tag), 16 mac1.
	if len(msg1) != 127 {
		t.Fatalf("first message of %d bytes, want 127", len(msg1))
	}
	if !r.CheckMAC1(msg1) {
		t.Fatal("mac1 of a genuine message refused")
	}
	reply, sk1, client, err := r.Respond(msg1)
	if err != nil || client != ck.Public() {
		t.Fatalf("respond: %v, client %s", err, client)
	}
	ck1, err := in.Finish(reply)
	if err != nil {
		t.Fatal(err)
	}
	if ck1.Send != sk1.Recv || ck1.Recv != sk1.Send || ck1.Cipher != sk1.Cipher || ck1.Send == ck1.Recv {
		t.Fatalf("keys not mirrored: client %+v server %+v", ck1, sk1)
	}
	cs, ss := ck1.Derive(LabelStream), sk1.Derive(LabelStream)
	cd := ck1.Derive(LabelDatagram)
	if cs.Send != ss.Recv || cs.Recv != ss.Send {
		t.Fatal("derived keys not mirrored")
	}
	for _, k := range [][32]byte{cs.Recv, cd.Send, cd.Recv, ck1.Send, ck1.Recv} {
		if k == cs.Send {
			t.Fatal("derived key equals another use's key")
		}
	}
	if got := r.Counts(); got.DH[dhAuthenticated] != 1 || got.DHForStrangers != 0 {
		t.Fatalf("counts %+v", got)
	}
}

// mac1 is BLAKE2s-128 keyed with BLAKE2s-256("mac1----" || server public
// key) over the Noise bytes: computed here from its definition, as a
// datagram transport or another implementation would.
func TestMAC1Definition(t *testing.T) {
	ck, sk := mustKey(t), mustKey(t)
	_, msg1, err := Initiate(ClientConfig{Private: ck, ServerKey: sk.Public()})
	if err != nil {
		t.Fatal(err)
	}
	pub := sk.Public()
	key := blake2s.Sum256(append([]byte("mac1----"), pub[:]...))
	h, _ := blake2s.New128(key[:])
	h.Write(msg1[:len(msg1)-16])
	if string(h.Sum(nil)) != string(msg1[len(msg1)-16:]) {
		t.Fatal("mac1 differs from its definition")
	}
}

// What fails before the DH costs none: a wrong length, a bad mac1 (a
// stranger who does not know the server's key, or a client configured
// with another server's key), and a replayed message.
func TestRefusedBeforeDH(t *testing.T) {
	ck, sk, other := mustKey(t), mustKey(t), mustKey(t)
	authorized := 0
	r := NewResponder(ServerConfig{Private: sk, Authorize: func(PublicKey, uint64) error { authorized++; return nil }})
	_, msg1, err := Initiate(ClientConfig{Private: ck, ServerKey: sk.Public()})
	if err != nil {
		t.Fatal(err)
	}
	_, wrongKey, err := Initiate(ClientConfig{Private: ck, ServerKey: other.Public()})
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), msg1...)
	flipped[40] ^= 1 // covered by mac1
	for _, c := range []struct {
		name string
		msg  []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"short", msg1[:60], ErrMalformed},
		{"long", make([]byte, maxHandshakeMsg+1), ErrMalformed},
		{"zeros", make([]byte, len(msg1)), ErrBadMAC1},
		{"other server's key", wrongKey, ErrBadMAC1},
		{"flipped bit", flipped, ErrBadMAC1},
		{"no mac1 (protocol 2)", msg1[:len(msg1)-MAC1Size], ErrMalformed},
	} {
		if r.CheckMAC1(c.msg) {
			t.Errorf("%s: CheckMAC1 accepted it", c.name)
		}
		if _, _, _, err := r.Respond(c.msg); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if _, _, _, err := r.Respond(msg1); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if _, _, _, err := r.Respond(msg1); !errors.Is(err, ErrDuplicate) {
			t.Fatalf("replayed message: %v, want ErrDuplicate", err)
		}
	}
	got := r.Counts()
	if authorized != 1 || len(got.DH) != 1 || got.DH[dhAuthenticated] != 1 || got.DHForStrangers != 0 {
		t.Fatalf("authorized %d times, counts %+v", authorized, got)
	}
	if got.RefusedBeforeDH[refusedDuplicate] != 100 || got.RefusedBeforeDH[refusedBadMAC1] != 3 || got.RefusedBeforeDH[refusedMalformed] != 4 {
		t.Fatalf("refused before DH: %v", got.RefusedBeforeDH)
	}
}

// A stranger who knows the server's public key gets past mac1 and costs a
// DH; it is counted as DH for strangers.
func TestDHForStrangersCounted(t *testing.T) {
	ck, sk, stranger := mustKey(t), mustKey(t), mustKey(t)
	var last uint64
	r := NewResponder(ServerConfig{Private: sk, Authorize: func(k PublicKey, ts uint64) error {
		if k != ck.Public() {
			return ErrUnknownPeer
		}
		if ts <= last {
			return ErrReplay
		}
		last = ts
		return nil
	}})
	fixed := func() time.Time { return time.Unix(1700000000, 0) }
	for _, cfg := range []ClientConfig{
		{Private: stranger, ServerKey: sk.Public()},
		{Private: ck, ServerKey: sk.Public(), Now: fixed},
		{Private: ck, ServerKey: sk.Public(), Now: fixed}, // same timestamp, new ephemeral: past the filter, refused by Authorize
		{Private: ck, ServerKey: sk.Public(), Version: 99},
	} {
		_, msg1, err := Initiate(cfg)
		if err != nil {
			t.Fatal(err)
		}
		r.Respond(msg1)
	}
	got := r.Counts()
	if got.DH[dhUnknownPeer] != 1 || got.DH[dhAuthenticated] != 1 || got.DH[dhReplay] != 1 || got.DH[dhVersion] != 1 || got.DHForStrangers != 2 {
		t.Fatalf("counts %+v", got)
	}
}

func TestSeenFilter(t *testing.T) {
	now := time.Unix(1000, 0)
	f := newSeenFilter(time.Minute, 4, func() time.Time { return now })
	m := func(i byte) [MAC1Size]byte { return [MAC1Size]byte{i} }
	if f.check(m(1)) || !f.check(m(1)) {
		t.Fatal("first sight or repeat misjudged")
	}
	now = now.Add(90 * time.Second) // one rotation: m(1) in the previous generation
	if !f.check(m(1)) {
		t.Fatal("forgotten within two windows")
	}
	now = now.Add(150 * time.Second) // refreshed by that check, so still here
	if !f.check(m(1)) {
		t.Fatal("a message replayed once a window was forgotten")
	}
	now = now.Add(61 * time.Second)
	f.check(m(9))
	now = now.Add(61 * time.Second)
	f.check(m(9))
	if f.check(m(1)) {
		t.Fatal("remembered after two idle windows")
	}
	if f.underLoad() {
		t.Fatal("under load before it filled")
	}
	for i := range byte(9) { // more than a generation holds: rotates early
		f.check(m(100 + i))
	}
	if !f.underLoad() {
		t.Fatal("not under load after filling within a window")
	}
	if len(f.cur) > 4 || len(f.prev) > 4 {
		t.Fatalf("grew past its cap: %d + %d", len(f.cur), len(f.prev))
	}
	now = now.Add(2 * time.Minute)
	if f.underLoad() {
		t.Fatal("still under load a window after it last filled")
	}
}

func BenchmarkCheckMAC1(b *testing.B) {
	ck, sk := mustKey(b), mustKey(b)
	r := NewResponder(ServerConfig{Private: sk})
	_, msg1, _ := Initiate(ClientConfig{Private: ck, ServerKey: sk.Public()})
	b.ReportAllocs()
	for b.Loop() {
		if !r.CheckMAC1(msg1) {
			b.Fatal("refused")
		}
	}
}

// BenchmarkRespondDH is the work a first message past mac1 and the replay
// filter costs: what they save for every message they stop.
func BenchmarkRespondDH(b *testing.B) {
	ck, sk := mustKey(b), mustKey(b)
	r := NewResponder(ServerConfig{Private: sk, Authorize: func(PublicKey, uint64) error { return nil }})
	_, msg1, _ := Initiate(ClientConfig{Private: ck, ServerKey: sk.Public()})
	for b.Loop() {
		if _, _, _, err := r.respond(msg1[:len(msg1)-MAC1Size]); err != nil {
			b.Fatal(err)
		}
	}
}
