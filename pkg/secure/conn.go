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
	"sync/atomic"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// Record layout on the wire: [4-byte big-endian length L][ciphertext][tag],
// where the ciphertext seals [1-byte type][payload] and L counts type,
// payload and tag. The length is authenticated as additional data. The
// nonce is the record's number under its key XOR the key's secret nonce
// mask (see rekey.go); numbering suffices because the transport is ordered.
const (
	recordHeader = 4
	tagSize      = chacha20poly1305.Overhead
	nonceSize    = chacha20poly1305.NonceSize
	// MaxRecordPlaintext is the most payload one record carries: a 64 KiB
	// frame and its header fit in one record.
	MaxRecordPlaintext = 64*1024 + 1024
	maxRecordCipher    = 1 + MaxRecordPlaintext + tagSize
	// readBufferSize serves record headers and small records; a large
	// record is read past it, straight into its destination.
	readBufferSize = 1024

	// RecordTypeLen is the type's length in front of a payload: ReadRecord
	// opens a record's payload this far into the buffer it reads it into.
	RecordTypeLen = 1
	// PacketHeadroom and PacketTailroom are what WritePackets needs around a
	// payload to seal it where it lies: the length and the type in front,
	// the tag behind. pkg/packet's buffers are laid out by them.
	PacketHeadroom = recordHeader + RecordTypeLen
	PacketTailroom = tagSize
)

// Record types: packets (one data frame per record, written and read
// without copies), control messages (one per record) and key updates
// (which Conn sends and consumes itself). 0 is no type: it was the byte
// stream yamux ran over, and a record of it now ends the session like any
// type the reader does not know.
const (
	TypePacket  byte = 1
	TypeControl byte = 2
	// TypeKeyUpdate ends its sender's current key: it is sealed under that
	// key, and every record after it under the next one (NextKey). Its
	// payload is the new epoch's number, 8 bytes big-endian. Like TLS 1.3's
	// KeyUpdate it needs no overlap of old and new key: the transports under
	// a Conn (TCP, and KCP's stream) are ordered and reliable, so the
	// receiver opens every record before the update with the old key and
	// every one after it with the new, and no record is ever in doubt.
	TypeKeyUpdate byte = 3
)

// ErrRecordTooLarge is returned for a length prefix beyond MaxRecordPlaintext:
// the stream is hostile or corrupt and is not read any further.
var ErrRecordTooLarge = errors.New("sealed record length out of range")

// Conn is a connection whose every byte is sealed under keys from the
// handshake. It carries typed records (WriteRecord, WritePackets,
// ReadRecord). One reader and any number of writers may use it
// concurrently. Each direction's key
// rotates (rekey.go): the writer updates its send key when it is due, the
// reader follows the peer's updates.
type Conn struct {
	conn   net.Conn
	cipher Ciphers
	limits keyLimits
	born   time.Time // the clock key ages are measured on (monotonic)

	rekeyInterval atomic.Int64 // nanoseconds
	sendKeyAt     atomic.Int64 // when the send key took over, nanoseconds since born
	rekeysSent    atomic.Uint64
	rekeysRecv    atomic.Uint64

	rmu  sync.Mutex
	br   *bufio.Reader
	recv keyState
	rhdr [recordHeader]byte
	rerr error

	wmu   sync.Mutex
	send  keyState
	wbuf  []byte
	wvec  [][]byte
	wbufs net.Buffers // lives here so that writev does not allocate
	// wupdate holds the key update record that goes out ahead of a write.
	wupdate [recordHeader + 1 + keyUpdatePayload + tagSize]byte
	werr    error
	try     tryState // TryWritePackets's socket and unsent tail
}

// keyState is one direction's current key: its epoch's AEAD and nonce
// mask, the secret the next epoch derives from, and the records and bytes
// (type byte and payload) sealed or opened under it.
type keyState struct {
	cipher  Ciphers
	aead    cipher.AEAD
	secret  [32]byte
	mask    [nonceSize]byte
	nonce   [nonceSize]byte // the nonce of the record in hand
	epoch   uint64
	records uint64
	bytes   uint64
}

// start takes the direction's first secret, from the handshake.
func (k *keyState) start(c Ciphers, secret [32]byte) error {
	k.cipher, k.secret = c, secret
	return k.derive()
}

// update steps to the next epoch. The old secret is overwritten, and the
// old AEAD dropped: what it holds of its key (the cipher's key schedule)
// lives on until the garbage collector reuses the memory, since Go's
// ciphers offer no way to erase it.
func (k *keyState) update() error {
	k.secret = NextKey(k.secret)
	k.epoch++
	return k.derive()
}

func (k *keyState) derive() error {
	key, mask := epochKeys(k.secret)
	aead, err := newAEAD(k.cipher, key)
	clear(key[:])
	if err != nil {
		return err
	}
	k.aead, k.mask, k.nonce, k.records, k.bytes = aead, mask, mask, 0, 0
	return nil
}

// nextNonce returns the nonce of the next record under the key and counts
// the record: the mask XOR the record's number in its last 8 bytes (the
// first 4 are the mask's own).
func (k *keyState) nextNonce() []byte {
	binary.LittleEndian.PutUint64(k.nonce[4:], binary.LittleEndian.Uint64(k.mask[4:])^k.records)
	k.records++
	return k.nonce[:]
}

func newConn(conn net.Conn, c Ciphers, sendKey, recvKey [32]byte) (*Conn, error) {
	sc := &Conn{conn: conn, cipher: c, limits: defaultKeyLimits, born: time.Now()}
	if err := sc.send.start(c, sendKey); err != nil {
		return nil, fmt.Errorf("send cipher: %w", err)
	}
	if err := sc.recv.start(c, recvKey); err != nil {
		return nil, fmt.Errorf("recv cipher: %w", err)
	}
	sc.rekeyInterval.Store(int64(DefaultRekeyInterval))
	sc.br = bufio.NewReaderSize(conn, readBufferSize)
	return sc, nil
}

// Cipher names the record cipher the handshake chose.
func (c *Conn) Cipher() string { return c.cipher.String() }

// SetRekeyInterval sets how long a send key of this side lives; it applies
// to the key in use. d is held within MinRekeyInterval..MaxRekeyInterval
// (a peer pushes it); 0 leaves the interval as it is.
func (c *Conn) SetRekeyInterval(d time.Duration) {
	if d == 0 {
		return
	}
	d = min(max(d, MinRekeyInterval), MaxRekeyInterval)
	c.rekeyInterval.Store(int64(d))
	// A transport that seals below the records (kcp's datagrams) rotates
	// its keys on the same schedule.
	if r, ok := c.conn.(interface{ SetRekeyInterval(time.Duration) }); ok {
		r.SetRekeyInterval(d)
	}
}

// RekeyInterval is how long a send key of this side lives.
func (c *Conn) RekeyInterval() time.Duration { return time.Duration(c.rekeyInterval.Load()) }

// Rekeys counts key updates: sent (this side's send key replaced) and
// received (the peer's).
func (c *Conn) Rekeys() (sent, received uint64) { return c.rekeysSent.Load(), c.rekeysRecv.Load() }

// KeyAge is how long this side's current send key has been in use.
func (c *Conn) KeyAge() time.Duration {
	return time.Since(c.born) - time.Duration(c.sendKeyAt.Load())
}

// ReadRecord reads the next record, opens it in place and returns its type
// and payload. Once a record's length is known it asks get for a buffer of
// at least that many bytes, so that an idle reader holds none; the payload
// is a slice of that buffer. Key update records are consumed here: the
// buffer of one serves the record after it, and get is asked again only if
// that one is larger.
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
	k := &c.recv
	var buf []byte
	for {
		if _, err := io.ReadFull(c.br, c.rhdr[:]); err != nil {
			if buf != nil && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // a key update is never the last record
			}
			return 0, nil, err
		}
		n := int(binary.BigEndian.Uint32(c.rhdr[:]))
		if n <= 1+tagSize || n > maxRecordCipher {
			return 0, nil, fmt.Errorf("%w: %d bytes", ErrRecordTooLarge, n)
		}
		if k.records+1 > c.limits.maxRecords || k.bytes+uint64(n-tagSize) > c.limits.maxBytes {
			return 0, nil, fmt.Errorf("%w: the peer sealed %d records (%d bytes) under one key without updating it (limit %d records, %d bytes)",
				ErrKeyExhausted, k.records, k.bytes, c.limits.maxRecords, c.limits.maxBytes)
		}
		if n > len(buf) {
			buf = get(n)
			if n > len(buf) {
				return 0, nil, fmt.Errorf("%w: %d bytes for a %d-byte buffer", ErrRecordTooLarge, n, len(buf))
			}
		}
		sealed := buf[:n]
		if _, err := io.ReadFull(c.br, sealed); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
		plain, err := k.aead.Open(sealed[:0], k.nextNonce(), sealed, c.rhdr[:])
		if err != nil {
			return 0, nil, fmt.Errorf("open record %d of key epoch %d: %w", k.records-1, k.epoch, err)
		}
		k.bytes += uint64(len(plain))
		if plain[0] != TypeKeyUpdate {
			return plain[0], plain[1:], nil
		}
		epoch, err := keyUpdateEpoch(plain[1:])
		if err == nil && epoch != k.epoch+1 {
			err = fmt.Errorf("key update to epoch %d after epoch %d", epoch, k.epoch)
		}
		if err == nil {
			err = k.update()
		}
		if err != nil {
			return 0, nil, fmt.Errorf("peer's key update: %w", err)
		}
		c.rekeysRecv.Add(1)
	}
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
	if err := c.flushTailLocked(); err != nil {
		return err
	}
	update, err := c.beginWriteLocked(1, 1+len(payload))
	if err != nil {
		c.werr = err
		return err
	}
	need := len(update) + PacketHeadroom + len(payload) + PacketTailroom
	if cap(c.wbuf) < need {
		c.wbuf = make([]byte, 0, need)
	}
	buf := append(c.wbuf[:0], update...)
	at := len(buf)
	buf = append(buf, 0, 0, 0, 0, typ)
	buf = append(buf, payload...)
	rec := c.sealLocked(buf[at:]) // the tag goes into buf's spare capacity
	if _, err := c.conn.Write(buf[:at+len(rec)]); err != nil {
		c.werr = err
		return err
	}
	return nil
}

// beginWriteLocked readies the send key for a write of records records
// holding size bytes (type bytes and payloads): when the key is due for an
// update (its age, or the volume it has sealed with this write) it updates
// it first and returns the key update record, which must go out ahead of
// the write's records; and it refuses a write that would take the key past
// a hard stop. The check is here, where every write passes under the write
// lock, so that the direct path and the session's writer goroutine both
// rekey and no timer or goroutine is needed: an idle session rekeys with
// its next keepalive.
func (c *Conn) beginWriteLocked(records, size int) ([]byte, error) {
	k := &c.send
	now := time.Since(c.born)
	var update []byte
	if k.records+uint64(records) > c.limits.rekeyRecords || k.bytes+uint64(size) > c.limits.rekeyBytes ||
		now-time.Duration(c.sendKeyAt.Load()) >= time.Duration(c.rekeyInterval.Load()) {
		var err error
		if update, err = c.keyUpdateLocked(now); err != nil {
			return nil, err
		}
	}
	if err := c.checkSendLimitLocked(records, size); err != nil {
		return nil, err
	}
	k.bytes += uint64(size)
	return update, nil
}

// checkSendLimitLocked is the sender's hard stop: records records of size
// bytes more must fit under the send key.
func (c *Conn) checkSendLimitLocked(records, size int) error {
	k := &c.send
	if k.records+uint64(records) > c.limits.maxRecords || k.bytes+uint64(size) > c.limits.maxBytes {
		return fmt.Errorf("%w: %d more records (%d bytes) would take the send key past %d records or %d bytes (it sealed %d, %d bytes)",
			ErrKeyExhausted, records, size, c.limits.maxRecords, c.limits.maxBytes, k.records, k.bytes)
	}
	return nil
}

// keyUpdateLocked seals a key update record under the send key, then
// replaces the key with the next one, and returns the record.
func (c *Conn) keyUpdateLocked(now time.Duration) ([]byte, error) {
	const size = 1 + keyUpdatePayload
	if err := c.checkSendLimitLocked(1, size); err != nil {
		return nil, err
	}
	k := &c.send
	rec := c.wupdate[:recordHeader+size]
	rec[recordHeader] = TypeKeyUpdate
	binary.BigEndian.PutUint64(rec[recordHeader+1:], k.epoch+1)
	rec = c.sealLocked(rec) // the tag goes into wupdate's spare capacity
	if err := k.update(); err != nil {
		return nil, fmt.Errorf("key update: %w", err)
	}
	c.sendKeyAt.Store(int64(now))
	c.rekeysSent.Add(1)
	return rec, nil
}

// sealLocked seals rec = [4 length][type][payload] in place under the send
// key, appending the tag (rec must have PacketTailroom spare capacity), and
// returns the record.
func (c *Conn) sealLocked(rec []byte) []byte {
	binary.BigEndian.PutUint32(rec, uint32(len(rec)-recordHeader+tagSize))
	plain := rec[recordHeader:]
	return rec[:recordHeader+len(c.send.aead.Seal(plain[:0], c.send.nextNonce(), plain, rec[:recordHeader]))]
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
	if err := c.flushTailLocked(); err != nil {
		return err
	}
	if err := c.sealPacketsLocked(recs); err != nil {
		return err
	}
	c.wbufs = c.wvec // WriteTo consumes its receiver; c.wvec keeps the array
	if _, err := c.wbufs.WriteTo(c.conn); err != nil {
		c.werr = err
		return err
	}
	return nil
}

// sealPacketsLocked seals recs (see WritePackets) into c.wvec, after the
// key update record when one is due. All of recs are checked before any is
// sealed, so that a bad one costs no record numbers the peer would wait
// for.
func (c *Conn) sealPacketsLocked(recs [][]byte) error {
	size := 0
	for _, rec := range recs {
		n := len(rec) - PacketHeadroom - PacketTailroom
		if n <= 0 || n > MaxRecordPlaintext {
			return fmt.Errorf("packet record of %d bytes out of range", len(rec))
		}
		size += 1 + n
	}
	update, err := c.beginWriteLocked(len(recs), size)
	if err != nil {
		c.werr = err
		return err
	}
	c.wvec = c.wvec[:0]
	if update != nil {
		c.wvec = append(c.wvec, update)
	}
	for _, rec := range recs {
		rec[recordHeader] = TypePacket
		c.wvec = append(c.wvec, c.sealLocked(rec[:len(rec)-PacketTailroom]))
	}
	return nil
}

func (c *Conn) Close() error                      { return c.conn.Close() }
func (c *Conn) LocalAddr() net.Addr               { return c.conn.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr              { return c.conn.RemoteAddr() }
func (c *Conn) SetDeadline(t time.Time) error     { return c.conn.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }
