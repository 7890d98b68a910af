package secure

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// On a stream (TCP, the KCP stream) each handshake message is framed by a
// 2-byte big-endian length.

// Client runs the initiator side of the handshake on conn and returns the
// sealed connection. On error the caller still owns conn. A server that
// does not know this client (or is not the server cfg names) answers
// nothing: the error then wraps ErrNoAnswer.
func Client(conn net.Conn, cfg ClientConfig) (*Conn, error) {
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultHandshakeTimeout
	}
	in, msg1, err := Initiate(cfg)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write(frame(msg1)); err != nil {
		return nil, fmt.Errorf("send handshake: %w", err)
	}
	reply, err := readHandshakeMsg(conn)
	if err != nil {
		if silent(err) {
			return nil, fmt.Errorf("%w (%v)", ErrNoAnswer, err)
		}
		return nil, fmt.Errorf("read handshake reply: %w", err)
	}
	k, err := in.Finish(reply)
	if err != nil {
		return nil, err
	}
	return NewConn(conn, k.Derive(LabelStream))
}

// silent reports whether a read error means the server sent no reply:
// it closed the connection, reset it, or the deadline passed.
func silent(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || (errors.As(err, &ne) && ne.Timeout())
}

// NewConn seals records over an ordered stream with keys from a handshake
// done elsewhere (already derived for this use: k.Derive(LabelStream)).
func NewConn(conn net.Conn, k Keys) (*Conn, error) {
	return newConn(conn, k.Cipher, k.Send, k.Recv)
}

// Server runs the responder side of the handshake on one connection with a
// responder of its own, for tools and tests; a daemon shares one Responder
// across its connections (Accept) so that its replay filter sees them all.
func Server(conn net.Conn, cfg ServerConfig) (*Conn, PublicKey, error) {
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultHandshakeTimeout
	}
	return NewResponder(cfg).Accept(conn, time.Now().Add(timeout))
}

// Accept runs the responder side of the handshake on conn: the first
// message must arrive before deadline. It keeps no state for a client that
// fails. Silence to strangers: whatever fails before the client's key is
// authenticated and authorized (garbage, a wrong length, a bad mac1, an
// unknown key, a replay) gets no byte back, and Accept reads and discards
// until the deadline (or until the client closes), exactly as it waits for
// a client that says nothing, before it returns: from outside, every
// refusal looks like a server that never answers. An authorized client of
// another protocol version is told so. On error the caller still owns conn
// and should close it.
func (r *Responder) Accept(conn net.Conn, deadline time.Time) (*Conn, PublicKey, error) {
	_ = conn.SetDeadline(deadline)
	defer conn.SetDeadline(time.Time{})
	msg1, err := readHandshakeMsg(conn)
	if err != nil {
		if errors.Is(err, ErrMalformed) {
			r.counts.refuse(refusedMalformed)
			drain(conn)
		}
		return nil, PublicKey{}, err
	}
	reply, k, client, err := r.Respond(msg1)
	var ve *VersionError
	if err != nil && !errors.As(err, &ve) {
		drain(conn)
		return nil, client, err
	}
	if _, werr := conn.Write(frame(reply)); werr != nil {
		return nil, client, fmt.Errorf("send handshake reply: %w", werr)
	}
	if err != nil {
		return nil, client, err
	}
	c, err := NewConn(conn, k.Derive(LabelStream))
	return c, client, err
}

// drain reads and drops whatever conn receives until its read deadline
// passes or the other side closes. Reading it all keeps the close a FIN, as
// for a silent client, not a reset for unread bytes.
func drain(conn net.Conn) { _, _ = io.Copy(io.Discard, conn) }

// frame prefixes msg with its 2-byte length.
func frame(msg []byte) []byte {
	out := make([]byte, 2, 2+len(msg))
	binary.BigEndian.PutUint16(out, uint16(len(msg)))
	return append(out, msg...)
}

func readHandshakeMsg(conn net.Conn) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n == 0 || n > maxHandshakeMsg {
		return nil, fmt.Errorf("%w: message length %d", ErrMalformed, n)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(conn, msg); err != nil {
		return nil, err
	}
	return msg, nil
}
