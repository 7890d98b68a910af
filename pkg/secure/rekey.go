package secure

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Key lifetime. Each direction of a connection has its own chain of
// traffic secrets: the first is that direction's key from the handshake
// (as NewConn gets it), and each key update steps to the next with
// NextKey. A secret is never used as a key itself: the record key and the
// nonce mask of an epoch are derived from it (HKDF-Expand with SHA-256,
// one label each, as Keys.Derive does), so the nonce of record n is mask
// XOR n, a sequence no observer can predict and that differs between
// sessions and epochs.
//
// A sender updates its key when the key is RekeyInterval old (checked
// when it next writes: an idle session rekeys with its next keepalive) or
// has sealed rekeyRecords records or rekeyBytes bytes, whichever comes first.
// AES-GCM's confidentiality bound (RFC 8446 §5.5: about 2^24.5 full 16 KiB
// records, 2^34.5 AES blocks, per key) is 2^8 times further than that
// volume; ChaCha20-Poly1305's is further still. A key update costs two
// HKDFs and a cipher key schedule (a few µs), so it is cheap to do often.
const (
	// DefaultRekeyInterval is how long a send key lives when nothing else
	// is configured (gtund's rekey_interval, pushed to its clients).
	DefaultRekeyInterval = 2 * time.Minute
	// MinRekeyInterval and MaxRekeyInterval bound what SetRekeyInterval
	// takes, whoever asks: a peer cannot push a key update per record, nor
	// keep keys for days.
	MinRekeyInterval = time.Second
	MaxRekeyInterval = time.Hour

	rekeyRecords = 1 << 20
	rekeyBytes   = 1 << 30
	// The hard stops, 16 times the volume that triggers an update: a
	// sender never seals past them, and a receiver ends the session of a
	// peer that keeps one key past them (it is broken or hostile). Both
	// are far below where a nonce could repeat (a 64-bit counter) and
	// below AES-GCM's bound (2^34 bytes is 2^30 blocks).
	maxKeyRecords = 1 << 24
	maxKeyBytes   = 1 << 34
)

// keyLimits are the volume bounds of one key; tests shrink them.
type keyLimits struct {
	rekeyRecords, rekeyBytes uint64 // the sender updates its key past either
	maxRecords, maxBytes     uint64 // hard stops, for the sender and the receiver
}

var defaultKeyLimits = keyLimits{rekeyRecords: rekeyRecords, rekeyBytes: rekeyBytes, maxRecords: maxKeyRecords, maxBytes: maxKeyBytes}

// ErrKeyExhausted ends a connection whose key reached a hard stop: this
// side would have to seal past it, or the peer kept its key past it.
var ErrKeyExhausted = errors.New("record key used up")

// HKDF labels: one per derived value, so that no two share bytes.
const (
	labelKeyUpdate = "gtun key update"
	labelRecordKey = "gtun record key"
	labelNonceMask = "gtun nonce mask"
)

// NextKey is the key update step: the traffic secret that follows secret,
// HKDF-Expand(secret, "gtun key update", 32) with SHA-256. Both ends of a
// direction take the step in lockstep. It is one-way: a later secret
// reveals no earlier one, so erasing a secret once its successor is in use
// keeps the records it sealed safe from a later compromise of the process.
// Any layer that rotates keys from a handshake secret uses this step.
func NextKey(secret [32]byte) [32]byte {
	return expand(secret, labelKeyUpdate)
}

// epochKeys derives an epoch's record key and nonce mask from its secret.
func epochKeys(secret [32]byte) (key [32]byte, mask [nonceSize]byte) {
	key = expand(secret, labelRecordKey)
	m := expand(secret, labelNonceMask)
	copy(mask[:], m[:])
	clear(m[:])
	return key, mask
}

// A key update record carries the number of the epoch it starts, so that
// a lost or reordered update fails with a clear error rather than as a
// record that does not open.
const keyUpdatePayload = 8

func keyUpdateEpoch(payload []byte) (uint64, error) {
	if len(payload) != keyUpdatePayload {
		return 0, fmt.Errorf("key update of %d bytes, want %d", len(payload), keyUpdatePayload)
	}
	return binary.BigEndian.Uint64(payload), nil
}
