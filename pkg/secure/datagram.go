package secure

import "crypto/cipher"

// What the datagram layer (pkg/dgram) takes from here, so that datagrams
// and records derive and step their keys one way.

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
