package session

import (
	"encoding/binary"
	"net"
	"sync"
)

// recordWriter is what the sealed connection offers: several buffers sent
// in one write.
type recordWriter interface {
	WriteRecords(ps ...[]byte) (int, error)
}

// yamux frame header: version, type, flags, stream id, length (12 bytes).
const (
	yamuxHeaderLen = 12
	yamuxTypeData  = 0
)

// muxConn sits between yamux and the sealed connection. yamux writes a data
// frame's header and its body with two Writes in a row from its send loop;
// muxConn holds the header back and sends both with one write, so a frame
// costs one syscall and goes out as one burst instead of a tiny segment
// followed by the body.
type muxConn struct {
	net.Conn
	rw      recordWriter
	mu      sync.Mutex
	held    [yamuxHeaderLen]byte
	holding bool
}

func wrapForMux(c net.Conn) net.Conn {
	if rw, ok := c.(recordWriter); ok {
		return &muxConn{Conn: c, rw: rw}
	}
	return c
}

func (m *muxConn) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.holding {
		m.holding = false
		if _, err := m.rw.WriteRecords(m.held[:], p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if len(p) == yamuxHeaderLen && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:]) > 0 {
		// A data header announcing a body: the body is yamux's next write.
		copy(m.held[:], p)
		m.holding = true
		return len(p), nil
	}
	return m.Conn.Write(p)
}
