package dgram

import (
	"bytes"
	"crypto/cipher"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// testAEAD derives an epoch's cipher and mask from its secret the simple
// way: these tests are about epochs, not about the derivation.
func testAEAD(secret [32]byte) (cipher.AEAD, [12]byte, error) {
	a, err := chacha20poly1305.New(secret[:])
	mask := sha256.Sum256(secret[:])
	return a, [12]byte(mask[:12]), err
}

// testStep is a key step for the tests of this file: any one-way function
// will do for them.
func testStep(key [32]byte) [32]byte { return sha256.Sum256(append([]byte("step"), key[:]...)) }

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func sealPair(t *testing.T) (*sealer, *opener) {
	t.Helper()
	key := [32]byte{1, 2, 3}
	s, err := newSealer(key, 7, testStep, testAEAD, t0)
	if err != nil {
		t.Fatal(err)
	}
	o, err := newOpener(key, testStep, testAEAD)
	if err != nil {
		t.Fatal(err)
	}
	return s, o
}

func mustSeal(t *testing.T, s *sealer, payload string, now time.Time) []byte {
	t.Helper()
	d, err := s.seal(nil, KindStream, 0, []byte(payload), now)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func expectOpen(t *testing.T, o *opener, d []byte, want string, now time.Time) {
	t.Helper()
	got, _, reason, ok := o.open(bytes.Clone(d), now)
	if !ok {
		t.Fatalf("%q did not open: %s", want, reason)
	}
	if string(got) != want {
		t.Fatalf("opened %q, want %q", got, want)
	}
}

func expectDrop(t *testing.T, o *opener, d []byte, want DropReason, now time.Time) {
	t.Helper()
	if got, _, reason, ok := o.open(bytes.Clone(d), now); ok || reason != want {
		t.Fatalf("opened %q (%v) with reason %v, want drop %v", got, ok, reason, want)
	}
}

func TestSealOpenReplayAndReorder(t *testing.T) {
	s, o := sealPair(t)
	var ds [][]byte
	for i := range 5 {
		ds = append(ds, mustSeal(t, s, fmt.Sprint("payload ", i), t0))
	}
	if got := index(ds[0][headerLen:]); got != 7 {
		t.Fatalf("receiver index on the wire %d, want 7", got)
	}
	expectOpen(t, o, ds[0], "payload 0", t0)
	expectOpen(t, o, ds[3], "payload 3", t0)
	expectOpen(t, o, ds[1], "payload 1", t0) // reordered
	expectDrop(t, o, ds[1], DropReplay, t0)  // duplicated
	expectDrop(t, o, ds[3], DropReplay, t0)
	expectOpen(t, o, ds[2], "payload 2", t0)
	expectOpen(t, o, ds[4], "payload 4", t0)
}

// Every single-bit change of a datagram is refused, and refusing it
// changes nothing: the original still opens afterwards.
func TestSealTamperedNeverOpens(t *testing.T) {
	s, o := sealPair(t)
	d := mustSeal(t, s, "the real one", t0)
	for i := range len(d) * 8 {
		m := bytes.Clone(d)
		m[i/8] ^= 1 << (i % 8)
		if got, _, _, ok := o.open(m, t0); ok {
			t.Fatalf("bit %d flipped: opened %q", i, got)
		}
	}
	expectOpen(t, o, d, "the real one", t0)
	expectDrop(t, o, d[:DataOverhead-1], DropMalformed, t0)
}

// A time-based key update: the receiver follows when a datagram of the new
// epoch opens, still opens the previous epoch's datagrams during the
// overlap, and refuses them after it.
func TestKeyUpdateByTimeWithOverlap(t *testing.T) {
	s, o := sealPair(t)
	old1 := mustSeal(t, s, "old 1", t0)
	old2 := mustSeal(t, s, "old 2", t0)
	old3 := mustSeal(t, s, "old 3", t0)
	now := t0.Add(DefaultRekeyInterval)
	new1 := mustSeal(t, s, "new 1", now)
	if new1[1] != 1 || s.updates != 1 {
		t.Fatalf("no key update after the interval: epoch %d, updates %d", new1[1], s.updates)
	}
	if index(new1[headerLen+indexLen:]) != 0 {
		t.Fatal("counter did not restart with the new key")
	}
	expectOpen(t, o, old1, "old 1", now)
	expectOpen(t, o, new1, "new 1", now) // the receiver moves on
	if o.updates != 1 {
		t.Fatalf("receiver followed %d updates, want 1", o.updates)
	}
	expectOpen(t, o, old2, "old 2", now.Add(epochOverlap-time.Millisecond)) // in flight across the update
	expectDrop(t, o, old2, DropReplay, now)
	expectDrop(t, o, old3, DropEpoch, now.Add(epochOverlap)) // too late
}

// A volume-based key update, and a sender that updated twice while every
// datagram of the epoch between was lost.
func TestKeyUpdateByVolumeAndSkippedEpoch(t *testing.T) {
	s, o := sealPair(t)
	s.after = 3
	for i := range 3 {
		expectOpen(t, o, mustSeal(t, s, fmt.Sprint(i), t0), fmt.Sprint(i), t0)
	}
	for i := range 3 {
		mustSeal(t, s, "lost", t0) // epoch 1, never arrives
		_ = i
	}
	d := mustSeal(t, s, "epoch 2", t0)
	if d[1] != 2 {
		t.Fatalf("epoch %d, want 2", d[1])
	}
	expectOpen(t, o, d, "epoch 2", t0)
	if o.cur.epoch != 2 {
		t.Fatalf("receiver at epoch %d, want 2", o.cur.epoch)
	}
}

// A forged datagram marked with the next epoch (valid index, any counter,
// garbage tag) moves nothing: the receiver stays on its key, the real
// datagrams go on opening, and the real next epoch still opens.
func TestForgedNextEpochMovesNothing(t *testing.T) {
	s, o := sealPair(t)
	expectOpen(t, o, mustSeal(t, s, "a", t0), "a", t0)
	forged := mustSeal(t, s, "b", t0)
	forged[1] = 1 // claims the next epoch: its tag is for epoch 0's key
	expectDrop(t, o, forged, DropBadTag, t0)
	if o.cur.epoch != 0 || o.updates != 0 {
		t.Fatalf("a forged datagram moved the receiver to epoch %d", o.cur.epoch)
	}
	forged[1] = 200 // far ahead
	expectDrop(t, o, forged, DropEpoch, t0)
	expectOpen(t, o, mustSeal(t, s, "c", t0), "c", t0)
	s.after = 0
	expectOpen(t, o, mustSeal(t, s, "d", t0), "d", t0)
	if o.cur.epoch != 1 {
		t.Fatalf("receiver at epoch %d after the real update, want 1", o.cur.epoch)
	}
}

func TestCounterHardLimit(t *testing.T) {
	s, o := sealPair(t)
	s.counter = rejectAfter
	s.after = rejectAfter + 10 // a sender that does not update in time
	expectDrop(t, o, mustSeal(t, s, "late", t0), DropCounterLimit, t0)
}

func TestSealDoesNotAllocate(t *testing.T) {
	s, o := sealPair(t)
	buf := make([]byte, 0, MaxDatagram)
	payload := make([]byte, 1350)
	in := make([]byte, 0, MaxDatagram)
	allocs := testing.AllocsPerRun(1000, func() {
		d, err := s.seal(buf[:0], KindStream, 0, payload, t0)
		if err != nil {
			t.Fatal(err)
		}
		in = append(in[:0], d...)
		if _, _, reason, ok := o.open(in, t0); !ok {
			t.Fatal(reason)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per datagram sealed and opened", allocs)
	}
}
