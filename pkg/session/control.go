// Package session runs the gtun protocol over a sealed connection: control
// records (hello, pushed config, keepalive) and packet records (data
// frames), one reader and one writer goroutine per session. Client and
// server share all of it.
package session

import (
	"encoding/json"
	"fmt"
)

// Control message types.
const (
	TypeHello  = "hello"  // client -> server, first message: proves the client is live
	TypeConfig = "config" // server -> client: tunnel address, routes, keepalive, rekey interval; re-sent on change
	TypePing   = "ping"   // client -> server
	TypePong   = "pong"   // server -> client, echoes Seq and Time
	TypeError  = "error"  // either way, then close
)

// MaxControlMessage bounds a control message; anything larger is hostile.
const MaxControlMessage = 64 * 1024

// Msg is one control message. JSON keeps the control plane readable in
// debug logs and easy to extend; it is far from the hot path.
type Msg struct {
	Type    string `json:"type"`
	Version uint16 `json:"version,omitempty"`

	// hello
	Name      string `json:"name,omitempty"`
	Transport string `json:"transport,omitempty"` // the transport the client dialed
	FECData   int    `json:"fec_data,omitempty"`  // kcp: the client's FEC, checked against the server's
	FECParity int    `json:"fec_parity,omitempty"`

	// config
	Address string `json:"address,omitempty"` // client tunnel address with pool length, e.g. 100.64.240.2/24
	Gateway string `json:"gateway,omitempty"` // server tunnel address
	// Address6 and Gateway6 are their IPv6 counterparts (server.pool6),
	// empty without one; a client that knows no IPv6 ignores them.
	Address6    string   `json:"address6,omitempty"`
	Gateway6    string   `json:"gateway6,omitempty"`
	MTU         int      `json:"mtu,omitempty"`
	Routes      []string `json:"routes,omitempty"`
	KeepaliveMS int      `json:"keepalive_ms,omitempty"`
	DeadAfter   int      `json:"dead_after,omitempty"` // missed keepalives before the session is dead
	// RekeyIntervalMS is how long the client's send keys live (the
	// server's rekey_interval); 0: the default. Each side rotates its own
	// send key; the server keeps its side to the same interval.
	RekeyIntervalMS int64 `json:"rekey_interval_ms,omitempty"`
	// Subnets are the networks the server routes to this client (its
	// [[peer]] subnets): a gateway client passes packets to them on.
	Subnets []string `json:"subnets,omitempty"`
	// DNS is split DNS for the client to apply; nil: none.
	DNS *DNS `json:"dns,omitempty"`

	// ping/pong
	Seq  uint64 `json:"seq,omitempty"`
	Time int64  `json:"time,omitempty"` // sender's monotonic-ish clock, unix nanoseconds
	// ping: the client's last measured round trip, so that the server
	// (which sends no pings of its own) can report it too
	RTT int64 `json:"rtt_ns,omitempty"`

	// error
	Error string `json:"error,omitempty"`
}

// DNS is split DNS pushed in a config message: names under Domains are
// resolved by Servers, through the tunnel.
type DNS struct {
	Servers []string `json:"servers"`
	Domains []string `json:"domains"`
}

// EncodeMsg returns m as the payload of one control record.
func EncodeMsg(m *Msg) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.Type, err)
	}
	if len(b) > MaxControlMessage {
		return nil, fmt.Errorf("control message %s of %d bytes is too large", m.Type, len(b))
	}
	return b, nil
}

// DecodeMsg parses the payload of one control record.
func DecodeMsg(b []byte) (*Msg, error) {
	if len(b) == 0 || len(b) > MaxControlMessage {
		return nil, fmt.Errorf("control message length %d out of range", len(b))
	}
	m := new(Msg)
	if err := json.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("decode control message: %w", err)
	}
	if m.Type == "" {
		return nil, fmt.Errorf("control message without type")
	}
	return m, nil
}
