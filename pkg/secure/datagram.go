package secure

import "crypto/cipher"

// What the datagram layer (pkg/dgram) takes from here, so that datagrams
// and records derive and step their keys one way, and first messages over
// UDP pass the same checks as over TCP.

// EpochCipher returns the AEAD (cipher c) and the nonce mask of the key
// epoch whose traffic secret is secret: the records' derivation (one HKDF
// label each for key and mask), for a layer that seals with a handshake's
// keys itself. Secrets step with NextKey.
func EpochCipher(c Ciphers, secret [32]byte) (cipher.AEAD, [12]byte, error) {
	key, mask := epochKeys(secret)
	defer clear(key[:])
	a, err := newAEAD(c, key)
	return a, mask, err
}

// PublicKey is the server's public key: what mac1 and the cookie seal are
// keyed with.
func (r *Responder) PublicKey() PublicKey { return r.pub }

// Remember is Respond's replay filter on its own, for a caller that screens
// first messages before it queues them for the DH (the datagram listener:
// a replay flood then never reaches its queue, and costs a lookup each).
// msg1 must have passed CheckMAC1. It reports whether msg1 is new, and
// remembers it; a duplicate is counted as Respond counts it.
func (r *Responder) Remember(msg1 []byte) bool {
	if r.seen.check([MAC1Size]byte(msg1[len(msg1)-MAC1Size:])) {
		r.counts.refuse(refusedDuplicate)
		return false
	}
	return true
}

// RespondRemembered is Respond for a first message that passed CheckMAC1
// and Remember: the DH and what follows, counted.
func (r *Responder) RespondRemembered(msg1 []byte) (reply []byte, k Keys, client PublicKey, err error) {
	reply, k, client, err = r.respond(msg1[:len(msg1)-MAC1Size])
	r.counts.didDH(err)
	return reply, k, client, err
}
