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

const (
	recordHeader = 4
	tagSize      = chacha20poly1305.Overhead
	// MaxRecordPlaintext is the most one sealed record carries: a 64 KiB
	// packet plus the framing above it fits in one record.
	MaxRecordPlaintext = 64*1024 + 1024
	maxRecordCipher    = MaxRecordPlaintext + tagSize
	readBufferSize     = 16 * 1024
)

// ErrRecordTooLarge is returned for a length prefix beyond MaxRecordPlaintext:
// the stream is hostile or corrupt and is not read any further.
var ErrRecordTooLarge = errors.New("sealed record length out of range")

// Conn is a net.Conn whose every byte is sealed with ChaCha20-Poly1305 under
// keys from the handshake. Records are [4-byte length][ciphertext+tag]; the
// nonce is a counter, which suffices because the underlying stream is ordered.
// One reader and one writer may use it concurrently.
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

// Read returns plaintext from the next sealed record(s). A caller whose
// buffer holds a whole record gets it decrypted straight into the buffer,
// saving a copy on the bulk path.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(c.pending) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		n, err := c.readRecord(p)
		if err != nil {
			c.rerr = err
			return 0, err
		}
		if n > 0 {
			return n, nil
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// readRecord reads and opens the next record: into dst when it fits (and
// returns the length), otherwise into c.pending (and returns 0).
func (c *Conn) readRecord(dst []byte) (int, error) {
	{
		if _, err := io.ReadFull(c.br, c.rhdr[:]); err != nil {
			return 0, err
		}
		n := int(binary.BigEndian.Uint32(c.rhdr[:]))
		if n <= tagSize || n > maxRecordCipher {
			return 0, fmt.Errorf("%w: %d bytes", ErrRecordTooLarge, n)
		}
		if cap(c.rbuf) < n {
			c.rbuf = make([]byte, n, max(n, 2*cap(c.rbuf)))
		}
		buf := c.rbuf[:n]
		if _, err := io.ReadFull(c.br, buf); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		putNonce(&c.rnonce, c.rcount)
		out := buf[:0] // in place
		direct := len(dst) >= n-tagSize
		if direct {
			out = dst[:0]
		}
		plain, err := c.recv.Open(out, c.rnonce[:], buf, c.rhdr[:])
		if err != nil {
			return 0, fmt.Errorf("open record %d: %w", c.rcount, err)
		}
		c.rcount++
		if direct {
			return len(plain), nil
		}
		c.pending = plain
		return 0, nil
	}
}

// Write seals p into one or more records and writes them at once.
func (c *Conn) Write(p []byte) (int, error) { return c.WriteRecords(p) }

// WriteRecords seals each of ps into its own record(s) and sends them all
// with one write: yamux hands over a frame header and its body separately,
// and sending them as two TCP writes would cost a syscall and a tiny segment
// per frame.
func (c *Conn) WriteRecords(ps ...[]byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	need, total := 0, 0
	for _, p := range ps {
		records := (len(p) + MaxRecordPlaintext - 1) / MaxRecordPlaintext
		need += len(p) + records*(recordHeader+tagSize)
		total += len(p)
	}
	if cap(c.wbuf) < need {
		c.wbuf = make([]byte, 0, max(need, 2*cap(c.wbuf)))
	}
	buf := c.wbuf[:0]
	for _, p := range ps {
		for len(p) > 0 {
			chunk := p[:min(len(p), MaxRecordPlaintext)]
			at := len(buf)
			buf = binary.BigEndian.AppendUint32(buf, uint32(len(chunk)+tagSize))
			putNonce(&c.wnonce, c.wcount)
			c.wcount++
			buf = c.send.Seal(buf, c.wnonce[:], chunk, buf[at:at+recordHeader])
			p = p[len(chunk):]
		}
	}
	if _, err := c.conn.Write(buf); err != nil {
		c.werr = err
		return 0, err
	}
	return total, nil
}

func (c *Conn) Close() error                       { return c.conn.Close() }
func (c *Conn) LocalAddr() net.Addr                { return c.conn.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr               { return c.conn.RemoteAddr() }
func (c *Conn) SetDeadline(t time.Time) error      { return c.conn.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.conn.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }
