package dgram

import "github.com/gtun/gtun/pkg/stats"

// DropReason is why a datagram was dropped. Datagrams are counted by
// reason in a stats.Counts, without a lock or an allocation: a flood of
// forged datagrams costs a counter each.
type DropReason uint8

// The reasons, as status and metrics name them.
const (
	DropMalformed      DropReason = iota // too short or too long, unknown type, bytes that must be zero are not
	DropBadMAC1                          // an initiation not keyed with this server's public key: a stranger, a scanner
	DropCookieRequired                   // under load without a valid mac2: answered with a cookie reply, no DH
	DropRateLimited                      // under load, a proven source over its handshake rate (the guard's)
	DropDuplicate                        // a first message seen before: a replay, dropped before the queue (no DH)
	DropHandshakeFull                    // the handshake worker is behind: dropped, the client retries
	DropAcceptFull                       // authenticated, but the server does not take sessions fast enough
	DropUnsolicited                      // a response or cookie reply that answers no initiation of ours
	DropUnknownIndex                     // no session has its receiver index
	DropReplay                           // counter seen already, or behind the window
	DropBadTag                           // does not open: forged, corrupt, or another key
	DropEpoch                            // key epoch neither current, previous (in its overlap) nor just ahead
	DropCounterLimit                     // counter past the hard stop
	DropQueueFull                        // the session's reader did not keep up (see deliver)
	DropSendError                        // the socket refused an outgoing datagram (no route, buffer, ...): lost like on the wire
	DropNotReady                         // a packet datagram (udp transport) on a session whose packets have nowhere to go: not running yet, or a kcp session
	numDropReasons
)

var dropNames = [numDropReasons]string{"malformed", "bad_mac1", "cookie_required", "rate_limited", "duplicate",
	"handshake_queue_full", "accept_queue_full", "unsolicited", "unknown_index", "replay", "bad_tag", "stale_epoch",
	"counter_limit", "queue_full", "send_error", "not_ready"}

func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// DropReasons are every reason's name, for metrics.
var DropReasons = dropNames[:]

// drops counts datagrams dropped, by reason.
type drops = stats.Counts[DropReason]

var _ [stats.MaxReasons - numDropReasons]struct{} // every reason fits stats.Counts
