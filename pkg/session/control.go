// Package session runs a yamux session over a sealed connection: one control
// stream (hello, pushed config, keepalive) and one data stream carrying
// length-prefixed IP packets. Client and server share all of it.
package session

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
)

// Control message types.
const (
	TypeHello  = "hello"  // client -> server, first message: proves the client is live
	TypeConfig = "config" // server -> client: tunnel address, routes, keepalive; re-sent on change
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
	Name string `json:"name,omitempty"`

	// config
	Address     string   `json:"address,omitempty"` // client tunnel address with pool length, e.g. 100.64.240.2/24
	Gateway     string   `json:"gateway,omitempty"` // server tunnel address
	MTU         int      `json:"mtu,omitempty"`
	Routes      []string `json:"routes,omitempty"`
	KeepaliveMS int      `json:"keepalive_ms,omitempty"`
	DeadAfter   int      `json:"dead_after,omitempty"` // missed keepalives before the session is dead

	// ping/pong
	Seq  uint64 `json:"seq,omitempty"`
	Time int64  `json:"time,omitempty"` // sender's monotonic-ish clock, unix nanoseconds

	// error
	Error string `json:"error,omitempty"`
}

// WriteMsg writes m with a 4-byte length prefix.
func WriteMsg(w io.Writer, m *Msg) error {
	body, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", m.Type, err)
	}
	buf := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)))
	copy(buf[4:], body)
	_, err = w.Write(buf)
	return err
}

// ReadMsg reads one length-prefixed control message.
func ReadMsg(r io.Reader) (*Msg, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxControlMessage {
		return nil, fmt.Errorf("control message length %d out of range", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	m := new(Msg)
	if err := json.Unmarshal(body, m); err != nil {
		return nil, fmt.Errorf("decode control message: %w", err)
	}
	if m.Type == "" {
		return nil, fmt.Errorf("control message without type")
	}
	return m, nil
}
