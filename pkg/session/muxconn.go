package session

import (
	"encoding/binary"
	"io"
	"net"
	"sync"

	"github.com/gtun/gtun/pkg/secure"
)

// yamux frame header: version, type, flags, stream id, length (12 bytes).
const (
	yamuxHeaderLen = 12
	yamuxTypeData  = 0
)

// muxConn is the connection yamux runs over: what it writes goes out as
// sealed stream records; what it reads is the payload of the stream records
// the session's reader feeds in (packet records never reach it).
//
// yamux writes a data frame's header and its body with two Writes in a row
// from its send loop; muxConn holds the header back and seals both into one
// write, so a frame costs one syscall instead of a tiny segment and the body.
type muxConn struct {
	*secure.Conn
	pr *io.PipeReader
	pw *io.PipeWriter

	wmu     sync.Mutex
	held    [yamuxHeaderLen]byte
	holding bool
}

func newMuxConn(sc *secure.Conn) *muxConn {
	pr, pw := io.Pipe()
	return &muxConn{Conn: sc, pr: pr, pw: pw}
}

// feed hands stream bytes to yamux; it blocks until yamux has read them.
func (m *muxConn) feed(p []byte) error {
	_, err := m.pw.Write(p)
	return err
}

// closeRead ends yamux's reads with err.
func (m *muxConn) closeRead(err error) { m.pw.CloseWithError(err) }

func (m *muxConn) Read(p []byte) (int, error) { return m.pr.Read(p) }

func (m *muxConn) Write(p []byte) (int, error) {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	if m.holding {
		m.holding = false
		if _, err := m.Conn.WriteStream(m.held[:], p); err != nil {
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
	return m.Conn.WriteStream(p)
}

func (m *muxConn) Close() error {
	m.closeRead(io.ErrClosedPipe)
	return m.Conn.Close()
}

var _ net.Conn = (*muxConn)(nil)
