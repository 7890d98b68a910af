package dgram

import (
	"crypto/cipher"

	"github.com/gtun/gtun/pkg/secure"
)

// sessionFromKeys makes a session from a completed handshake: its
// datagrams are sealed under keys derived for them alone
// (secure.LabelDatagram), stepped with the records' key step, and the
// stream above (kcp's records) gets keys of its own (secure.LabelStream).
// The handshake's keys themselves are not kept.
func sessionFromKeys(k secure.Keys, p sessionParams) (*Session, error) {
	dk := k.Derive(secure.LabelDatagram)
	defer clear(dk.Send[:])
	defer clear(dk.Recv[:])
	p.send, p.recv = dk.Send, dk.Recv
	p.step = secure.NextKey
	c := k.Cipher
	p.newAEAD = func(secret [32]byte) (cipher.AEAD, [12]byte, error) { return secure.EpochCipher(c, secret) }
	s, err := newSession(p)
	if err != nil {
		return nil, err
	}
	s.streamKeys = k.Derive(secure.LabelStream)
	return s, nil
}

// StreamKeys are the keys for the records of a stream carried in this
// session (kcp's): derived from the same handshake for that use alone.
func (s *Session) StreamKeys() secure.Keys { return s.streamKeys }

// Peer is the client's authenticated key (on the server's sessions).
func (s *Session) Peer() secure.PublicKey { return s.peer }
