package dgram

import (
	"errors"
	"time"
)

var errPayloadTooLarge = errors.New("datagram payload too large")

// PacketSealer seals a session's packet datagrams many under one hold of
// the session's seal lock: the lock and the clock's check of the key's
// age are paid once for a run of datagrams (the ~45 segments of a TSO
// frame that leave in one GSO send), not once per datagram. Each datagram
// still takes its own counter and still steps the key when its count is
// reached. The first Seal after Begin or Release takes the lock; Release
// lets it go, and must come before the run is sent (the lock is not held
// across a system call) and before the owner is done with its frame.
// Not safe for concurrent use: one sender owns it.
type PacketSealer struct {
	s    *Session
	now  time.Time
	held bool
}

// PacketSealer is a sealer of s's packet datagrams.
func (s *Session) PacketSealer() PacketSealer { return PacketSealer{s: s} }

// Begin starts sealing at now: a time the caller read once for a run of
// packets (it decides key updates only, and reading the clock costs as
// much as sealing a short packet on some virtual machines).
func (p *PacketSealer) Begin(now time.Time) { p.now = now }

// Seal appends the packet datagram carrying pkt with flags to dst (in
// dst's spare capacity when it suffices: no allocation), for SendSealed.
func (p *PacketSealer) Seal(dst, pkt []byte, flags byte) ([]byte, error) {
	if len(pkt) > MaxPayload {
		return dst, errPayloadTooLarge
	}
	if !p.held {
		p.s.smu.Lock()
		p.held = true
		if err := p.s.sealer.checkAge(p.now); err != nil {
			return dst, err
		}
	}
	return p.s.sealer.sealCounted(dst, KindPacket, flags, pkt, p.now)
}

// Release lets the seal lock go, if Seal took it.
func (p *PacketSealer) Release() {
	if p.held {
		p.held = false
		p.s.smu.Unlock()
	}
}
