package dgram

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Key epochs. Each direction's key steps forward on its own (stepKey) after
// rekeyInterval or rekeyAfter datagrams, whichever comes first; the sender
// switches at once and marks each datagram with the low byte of its epoch,
// and the receiver, which holds the next few epochs' keys ready, moves to a
// newer epoch only when a datagram of it opens. The previous epoch's key
// still opens for epochOverlap after that, so datagrams in flight or
// reordered across a key update are not lost. A forged datagram of any
// epoch moves nothing: nothing changes before a tag opens.
const (
	// DefaultRekeyInterval is the key lifetime by time unless the session
	// is told otherwise (gtund's rekey_interval).
	DefaultRekeyInterval = 2 * time.Minute
	// rekeyAfter datagrams under one key (~2 GB of 1400-byte datagrams):
	// far inside AES-GCM's usage limit (RFC 8446 5.5, ~2^34.5 blocks per
	// key when nonces are unique; a datagram is ~90 blocks).
	rekeyAfter = 1 << 24
	// rejectAfter is the receiver's hard stop: a counter at or past it is
	// refused whatever the key, so a peer that never updates its key
	// cannot go on (the sender updates long before).
	rejectAfter = 1 << 26
	// epochOverlap is how long the previous epoch's key still opens.
	epochOverlap = 10 * time.Second
	// lookahead is how many epochs ahead the receiver holds keys ready:
	// a sender that updated twice while every datagram of the epoch in
	// between was lost (a blackhole with a 1 s rekey interval) is still
	// understood.
	lookahead = 3
)

var errCounterLimit = errors.New("datagram counter at its hard limit: key update overdue")

// Each direction has a chain of secrets: the first is that direction's
// datagram key from the handshake, each next one is keyStep of the one
// before (pkg/secure's NextKey, the records' step too). A secret is not a
// key itself: epochCipher derives the epoch's AEAD and a secret nonce mask
// from it (pkg/secure's derivation, with the handshake's cipher).
type keyStep func(secret [32]byte) [32]byte
type epochCipher func(secret [32]byte) (aead cipher.AEAD, mask [12]byte, err error)

// putNonce sets the nonce of counter: the mask XOR the little-endian
// counter in its last 8 bytes (the first 4 are the mask's own), as the
// records do. The counter restarts at 0 with every epoch, whose mask and
// key are new.
func putNonce(n *[12]byte, mask *[12]byte, counter uint64) {
	copy(n[:4], mask[:4])
	binary.LittleEndian.PutUint64(n[4:], binary.LittleEndian.Uint64(mask[4:])^counter)
}

// sealer seals one session's outgoing data datagrams. Not safe for
// concurrent use: the session serializes it.
type sealer struct {
	step     keyStep
	newAEAD  epochCipher
	receiver uint32 // the peer's index for this session
	interval time.Duration
	after    uint64 // datagrams per epoch (rekeyAfter; tests set less)

	key     [32]byte // the epoch's secret
	aead    cipher.AEAD
	mask    [12]byte
	epoch   uint32
	counter uint64
	born    time.Time
	nonce   [12]byte
	updates uint64 // key updates done
}

func newSealer(key [32]byte, receiver uint32, step keyStep, newAEAD epochCipher, now time.Time) (*sealer, error) {
	a, mask, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	return &sealer{step: step, newAEAD: newAEAD, receiver: receiver, interval: DefaultRekeyInterval, after: rekeyAfter,
		key: key, aead: a, mask: mask, born: now}, nil
}

// seal appends the data datagram carrying payload of kind, with flags, to
// dst (dst's spare capacity is used when it suffices: no allocation).
func (s *sealer) seal(dst []byte, kind, flags byte, payload []byte, now time.Time) ([]byte, error) {
	if err := s.checkAge(now); err != nil {
		return dst, err
	}
	return s.sealCounted(dst, kind, flags, payload, now)
}

// checkAge updates the key if it has lived its interval at now.
func (s *sealer) checkAge(now time.Time) error {
	if now.Sub(s.born) >= s.interval {
		return s.update(now)
	}
	return nil
}

// sealCounted is seal after checkAge: only the count of datagrams under
// the key is checked, so that a run of datagrams sealed at one time (see
// PacketSealer) pays for the clock's check once.
func (s *sealer) sealCounted(dst []byte, kind, flags byte, payload []byte, now time.Time) ([]byte, error) {
	if s.counter >= s.after {
		if err := s.update(now); err != nil {
			return dst, err
		}
	}
	at := len(dst)
	dst = append(dst, make([]byte, DataHeaderLen)...)
	hdr := dst[at:]
	hdr[0], hdr[1], hdr[2], hdr[3] = TypeData, byte(s.epoch), kind, flags
	putIndex(hdr[headerLen:], s.receiver)
	binary.LittleEndian.PutUint64(hdr[headerLen+indexLen:], s.counter)
	putNonce(&s.nonce, &s.mask, s.counter)
	s.counter++
	return s.aead.Seal(dst, s.nonce[:], payload, hdr[:DataHeaderLen]), nil
}

// update moves to the next epoch: new key, counter from 0.
func (s *sealer) update(now time.Time) error {
	next := s.step(s.key)
	a, mask, err := s.newAEAD(next)
	if err != nil {
		return fmt.Errorf("key update: %w", err)
	}
	clear(s.key[:]) // the old secret is gone: what it sealed stays sealed
	s.key, s.aead, s.mask, s.epoch, s.counter, s.born = next, a, mask, s.epoch+1, 0, now
	s.updates++
	return nil
}

// epochKey is one epoch's receive key and replay window.
type epochKey struct {
	epoch  uint32
	key    [32]byte // the epoch's secret, for the next one
	aead   cipher.AEAD
	mask   [12]byte
	window replayWindow
}

// opener opens one session's incoming data datagrams. Not safe for
// concurrent use: the session serializes it.
type opener struct {
	step    keyStep
	newAEAD epochCipher

	cur      *epochKey
	prev     *epochKey // nil, or the epoch before cur until prevEnds
	prevEnds time.Time
	ahead    [lookahead]*epochKey // cur+1, cur+2, ...
	nonce    [12]byte
	updates  uint64 // key updates followed
}

func newOpener(key [32]byte, step keyStep, newAEAD epochCipher) (*opener, error) {
	o := &opener{step: step, newAEAD: newAEAD}
	cur, err := o.derive(0, key)
	if err != nil {
		return nil, err
	}
	o.cur = cur
	return o, o.fillAhead()
}

func (o *opener) derive(epoch uint32, key [32]byte) (*epochKey, error) {
	a, mask, err := o.newAEAD(key)
	if err != nil {
		return nil, err
	}
	return &epochKey{epoch: epoch, key: key, aead: a, mask: mask}, nil
}

// fillAhead derives the keys of the epochs after cur that are not ready.
func (o *opener) fillAhead() error {
	last := o.cur
	for i := range o.ahead {
		if o.ahead[i] == nil {
			k, err := o.derive(last.epoch+1, o.step(last.key))
			if err != nil {
				return fmt.Errorf("key update: %w", err)
			}
			o.ahead[i] = k
		}
		last = o.ahead[i]
	}
	return nil
}

// open opens the data datagram d in place and returns its payload, and
// whether its counter moved its epoch's window forward (the newest datagram
// of the newest epoch: the one whose source is the peer's current address).
// On failure it returns the drop reason and false; nothing has changed
// then.
func (o *opener) open(d []byte, now time.Time) (payload []byte, newest bool, reason DropReason, ok bool) {
	return o.openTo(nil, d, now)
}

// openTo is open with the payload decrypted into dst (len(dst) is the
// payload's length, dst apart from d) instead of in place; nil: in place.
func (o *opener) openTo(dst, d []byte, now time.Time) (payload []byte, newest bool, reason DropReason, ok bool) {
	if len(d) < DataOverhead {
		return nil, false, DropMalformed, false
	}
	epoch := d[1]
	counter := binary.LittleEndian.Uint64(d[headerLen+indexLen:])
	if counter >= rejectAfter {
		return nil, false, DropCounterLimit, false
	}
	if o.prev != nil && !now.Before(o.prevEnds) {
		clear(o.prev.key[:])
		o.prev = nil
	}
	k, ahead := o.cur, -1
	switch {
	case epoch == byte(o.cur.epoch):
	case o.prev != nil && epoch == byte(o.prev.epoch):
		k = o.prev
	default:
		k = nil
		for i, a := range o.ahead {
			if a != nil && epoch == byte(a.epoch) {
				k, ahead = a, i
				break
			}
		}
		if k == nil {
			return nil, false, DropEpoch, false
		}
	}
	if !k.window.check(counter) {
		return nil, false, DropReplay, false
	}
	putNonce(&o.nonce, &k.mask, counter)
	hdr, sealed := d[:DataHeaderLen], d[DataHeaderLen:]
	out := sealed[:0]
	if dst != nil {
		out = dst[:0]
	}
	plain, err := k.aead.Open(out, o.nonce[:], sealed, hdr)
	if err != nil {
		return nil, false, DropBadTag, false
	}
	forward := k.window.accept(counter)
	if ahead >= 0 {
		// The peer updated its key: that epoch is current from now on,
		// the one before it still opens for a while, any skipped are gone.
		if o.prev != nil {
			clear(o.prev.key[:])
		}
		o.prev, o.prevEnds, o.cur = o.cur, now.Add(epochOverlap), k
		copy(o.ahead[:], o.ahead[ahead+1:])
		clear(o.ahead[lookahead-ahead-1:])
		o.updates++
		// An error leaves an epoch ahead without its key (it cannot
		// happen with 32-byte keys): datagrams of it would not open, the
		// session would die of silence and be made again. Not a reason
		// to refuse this datagram, which opened.
		_ = o.fillAhead()
	}
	return plain, forward && k == o.cur, 0, true
}
