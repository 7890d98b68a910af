package secure

import (
	"bufio"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// Record layout on the wire: [4-byte big-endian length L][ciphertext][tag],
// where the ciphertext seals [1-byte type][payload] and L counts type,
// payload and tag. The length is authenticated as additional data; the nonce
// is the record counter, which suffices because the transport is ordered.
const (
	recordHeader = 4
	tagSize      = chacha20poly1305.Overhead
	// MaxRecordPlaintext is the most payload one record carries: a 64 KiB
	// frame and its header fit in one record.
	MaxRecordPlaintext = 64*1024 + 1024
	maxRecordCipher    = 1 + MaxRecordPlaintext + tagSize
	// readBufferSize serves record headers and small records; a large
	// record is read past it, straight into its destination.
	readBufferSize = 1024

	// PacketHeadroom and PacketTailroom are what WritePackets needs around a
	// payload to seal it where it lies: the length and the type in front,
	// the tag behind.
	PacketHeadroom = recordHeader + 1
	PacketTailroom = tagSize
)

// Record types: the byte stream (Read/Write), packets (one data frame per
// record, written and read without copies) and control messages (one per
// record).
const (
	TypeStream  byte = 0
	TypePacket  byte = 1
	TypeControl byte = 2
)

// ErrRecordTooLarge is returned for a length prefix beyond MaxRecordPlaintext:
// the stream is hostile or corrupt and is not read any further.
var ErrRecordTooLarge = errors.New("sealed record length out of range")

// Conn is a connection whose every byte is sealed under keys from the
// handshake. It carries typed records (WriteRecord, WritePackets,
// ReadRecord), and is also a net.Conn over stream records. One reader and
// any number of writers may use it concurrently.
type Conn struct {
	conn   net.Conn
	cipher Ciphers

	rmu     sync.Mutex
	br      *bufio.Reader
	recv    cipher.AEAD
	rnonce  [chacha20poly1305.NonceSize]byte
	rcount  uint64
	rhdr    [recordHeader]byte
	rbuf    []byte
	pending []byte
	rerr    error

	wmu    sync.Mutex
	send   cipher.AEAD
	wnonce [chacha20poly1305.NonceSize]byte
	wcount uint64
	wbuf   []byte
	wvec   [][]byte
	wbufs  net.Buffers // lives here so that writev does not allocate
	werr   error
}

func newConn(conn net.Conn, c Ciphers, sendKey, recvKey [32]byte) (*Conn, error) {
	send, err := newAEAD(c, sendKey)
	if err != nil {
		return nil, fmt.Errorf("send cipher: %w", err)
	}
	recv, err := newAEAD(c, recvKey)
	if err != nil {
		return nil, fmt.Errorf("recv cipher: %w", err)
	}
	return &Conn{conn: conn, cipher: c, br: bufio.NewReaderSize(conn, readBufferSize), send: send, recv: recv}, nil
}

// Cipher names the record cipher the handshake chose.
func (c *Conn) Cipher() string { return c.cipher.String() }

// The nonce is 4 zero bytes and a little-endian record counter (Noise's
// ChaChaPoly layout) for both ciphers; both take 12-byte nonces and 16-byte
// tags. Keys are never reused across connections, so counters can restart.
func putNonce(n *[chacha20poly1305.NonceSize]byte, c uint64) { binary.LittleEndian.PutUint64(n[4:], c) }

// ReadRecord reads the next record, opens it in place and returns its type
// and payload. Once the record's length is known it asks get for a buffer
// of at least that many bytes, so that an idle reader holds none; the
// payload is a slice of that buffer. Not to be mixed with Read.
func (c *Conn) ReadRecord(get func(n int) []byte) (byte, []byte, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.rerr != nil {
		return 0, nil, c.rerr
	}
	typ, payload, err := c.readRecord(get)
	if err != nil {
		c.rerr = err
	}
	return typ, payload, err
}

func (c *Conn) readRecord(get func(n int) []byte) (byte, []byte, error) {
	if _, err := io.ReadFull(c.br, c.rhdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(c.rhdr[:]))
	if n <= 1+tagSize || n > maxRecordCipher {
		return 0, nil, fmt.Errorf("%w: %d bytes", ErrRecordTooLarge, n)
	}
	buf := get(n)
	if n > len(buf) {
		return 0, nil, fmt.Errorf("%w: %d bytes for a %d-byte buffer", ErrRecordTooLarge, n, len(buf))
	}
	sealed := buf[:n]
	if _, err := io.ReadFull(c.br, sealed); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	putNonce(&c.rnonce, c.rcount)
	plain, err := c.recv.Open(sealed[:0], c.rnonce[:], sealed, c.rhdr[:])
	if err != nil {
		return 0, nil, fmt.Errorf("open record %d: %w", c.rcount, err)
	}
	c.rcount++
	return plain[0], plain[1:], nil
}

// Read returns bytes of the stream. A packet record here is a protocol error:
// whoever sends packets reads with ReadRecord.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.pending) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		typ, payload, err := c.readRecord(func(n int) []byte {
			if cap(c.rbuf) < n {
				c.rbuf = make([]byte, n)
			}
			return c.rbuf[:cap(c.rbuf)]
		})
		if err == nil && typ != TypeStream {
			err = fmt.Errorf("unexpected record type %d on the stream", typ)
		}
		if err != nil {
			c.rerr = err
			return 0, err
		}
		c.pending = payload
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// WriteRecord seals payload as one record of type typ and writes it.
func (c *Conn) WriteRecord(typ byte, payload []byte) error {
	if len(payload) == 0 || len(payload) > MaxRecordPlaintext {
		return fmt.Errorf("record of %d bytes out of range", len(payload))
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	need := PacketHeadroom + len(payload) + PacketTailroom
	if cap(c.wbuf) < need {
		c.wbuf = make([]byte, 0, need)
	}
	buf := append(c.wbuf[:0], 0, 0, 0, 0, typ)
	rec := c.sealLocked(append(buf, payload...))
	if _, err := c.conn.Write(rec); err != nil {
		c.werr = err
		return err
	}
	return nil
}

// Write seals p into stream records and sends them with one write.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	records := (len(p) + MaxRecordPlaintext - 1) / MaxRecordPlaintext
	need := len(p) + records*(PacketHeadroom+PacketTailroom)
	if cap(c.wbuf) < need {
		c.wbuf = make([]byte, 0, need)
	}
	buf := c.wbuf[:0]
	for rest := p; len(rest) > 0; {
		chunk := rest[:min(len(rest), MaxRecordPlaintext)]
		at := len(buf)
		buf = append(buf, 0, 0, 0, 0, TypeStream)
		buf = append(buf, chunk...)
		rec := c.sealLocked(buf[at:]) // the tag goes into buf's spare capacity
		buf = buf[:at+len(rec)]
		rest = rest[len(chunk):]
	}
	if _, err := c.conn.Write(buf); err != nil {
		c.werr = err
		return 0, err
	}
	return len(p), nil
}

// sealLocked seals rec = [4 length][type][payload] in place, appending the
// tag (rec must have PacketTailroom spare capacity), and returns the record.
func (c *Conn) sealLocked(rec []byte) []byte {
	binary.BigEndian.PutUint32(rec, uint32(len(rec)-recordHeader+tagSize))
	putNonce(&c.wnonce, c.wcount)
	c.wcount++
	plain := rec[recordHeader:]
	return rec[:recordHeader+len(c.send.Seal(plain[:0], c.wnonce[:], plain, rec[:recordHeader]))]
}

// WritePackets seals each of recs in place as one packet record and sends
// them all with one write (writev): the frames are never copied. Each rec is
// [PacketHeadroom spare][payload][PacketTailroom spare]; its contents are
// destroyed.
func (c *Conn) WritePackets(recs ...[]byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	c.wvec = c.wvec[:0]
	for _, rec := range recs {
		if len(rec) <= PacketHeadroom+PacketTailroom || len(rec)-PacketHeadroom-PacketTailroom > MaxRecordPlaintext {
			return fmt.Errorf("packet record of %d bytes out of range", len(rec))
		}
		rec[recordHeader] = TypePacket
		c.wvec = append(c.wvec, c.sealLocked(rec[:len(rec)-PacketTailroom]))
	}
	c.wbufs = c.wvec // WriteTo consumes its receiver; c.wvec keeps the array
	if _, err := c.wbufs.WriteTo(c.conn); err != nil {
		c.werr = err
		return err
	}
	return nil
}

func (c *Conn) Close() error                       { return c.conn.Close() }
func (c *Conn) LocalAddr() net.Addr                { return c.conn.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr               { return c.conn.RemoteAddr() }
func (c *Conn) SetDeadline(t time.Time) error      { return c.conn.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.conn.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }
