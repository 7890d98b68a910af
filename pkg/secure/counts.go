package secure

import (
	"errors"

	"github.com/gtun/gtun/pkg/stats"
)

// What a Responder did with a first message before any DH.
const (
	refusedMalformed = "malformed" // wrong length
	refusedBadMAC1   = "bad_mac1"
	refusedDuplicate = "duplicate" // seen before: a replay
)

// Outcomes of a first message that cost a DH.
const (
	dhAuthenticated = "authenticated" // a known key, handshake completed
	dhVersion       = "version"       // a known key of another protocol version, told so
	dhUnknownPeer   = "unknown_peer"
	dhReplay        = "replay" // a known key's timestamp not newer than its last
	dhMalformed     = "malformed"
)

// HandshakeCounts is what a Responder did with the first messages it was
// given. DHForStrangers is the DH work spent on messages that did not
// prove a known key: with mac1 and the replay filter in front, only a
// sender who knows the server's public key can cause it.
type HandshakeCounts struct {
	RefusedBeforeDH map[string]uint64 `json:"refused_before_dh,omitempty"` // malformed, bad_mac1, duplicate
	DH              map[string]uint64 `json:"dh,omitempty"`                // authenticated, version, unknown_peer, replay, malformed
	DHForStrangers  uint64            `json:"dh_for_strangers"`
}

// counts counts a Responder's work.
type counts struct {
	refused, dh stats.Reasons
}

func (c *counts) refuse(reason string) { c.refused.Inc(reason) }

func (c *counts) didDH(err error) { c.dh.Inc(dhOutcome(err)) }

// DHOutcomes are the outcomes HandshakeCounts.DH counts, for metrics.
var DHOutcomes = []string{dhAuthenticated, dhVersion, dhUnknownPeer, dhReplay, dhMalformed}

func dhOutcome(err error) string {
	var ve *VersionError
	switch {
	case err == nil:
		return dhAuthenticated
	case errors.As(err, &ve):
		return dhVersion
	case errors.Is(err, ErrUnknownPeer):
		return dhUnknownPeer
	case errors.Is(err, ErrReplay):
		return dhReplay
	}
	return dhMalformed
}

func (c *counts) snapshot() HandshakeCounts {
	s := HandshakeCounts{RefusedBeforeDH: c.refused.Snapshot(), DH: c.dh.Snapshot()}
	for outcome, n := range s.DH {
		if outcome != dhAuthenticated && outcome != dhVersion {
			s.DHForStrangers += n
		}
	}
	return s
}
