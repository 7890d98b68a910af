package dgram

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"hash"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
)

// The cookie (WireGuard's model): under load, gtund answers an initiation
// whose mac2 does not prove its source with a cookie reply instead of doing
// any Diffie-Hellman. The cookie is a MAC of the source address and port
// under a secret that rotates every cookieRotate, so the server keeps no
// state per source; it travels sealed (XChaCha20-Poly1305 keyed from the
// server's public key, additional data the initiation's mac1), so only the
// initiator that sent that initiation can read it. The initiator's next
// initiation carries mac2, a MAC keyed by the cookie: proof that it
// receives datagrams at the address it sends from. A forged source never
// sees its cookie, so a flood from forged sources costs gtund a cookie
// reply each (smaller than the initiation: no amplification) and nothing
// else.
const (
	cookieLen = 16
	// cookieRotate is how long a cookie secret lives; a client uses a
	// cookie for a little less, so that it does not send one just expired.
	cookieRotate    = 2 * time.Minute
	cookieClientTTL = cookieRotate - 5*time.Second

	labelCookie = "cookie--"
)

// cookieSealKey is the key cookie replies are sealed with: anyone who knows
// the server's public key (its clients) can open them, and the additional
// data (the initiation's mac1) ties a reply to one initiation.
func cookieSealKey(serverPub [32]byte) [32]byte {
	h, _ := blake2s.New256(nil)
	h.Write([]byte(labelCookie))
	h.Write(serverPub[:])
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// mac2er computes the initiation's mac2: BLAKE2s-256 over the cookie
// padded to one 64-byte block followed by the message, truncated to 16
// bytes. That is a prefix MAC, which BLAKE2's keyed mode also is (the key
// is the first block); written this way, one hasher serves every cookie
// with Reset, where blake2s.New128(cookie) would allocate per initiation on
// the path a flood takes. Its buffers live in it for the same reason (a
// slice passed to an interface method escapes). Not safe for concurrent use.
type mac2er struct {
	h     hash.Hash // unkeyed BLAKE2s-256
	block [blake2s.BlockSize]byte
	sum   [blake2s.Size]byte
}

func newMAC2er() *mac2er {
	h, _ := blake2s.New256(nil)
	return &mac2er{h: h}
}

func (m *mac2er) compute(cookie *[cookieLen]byte, msg []byte, out *[macLen]byte) {
	clear(m.block[:])
	copy(m.block[:], cookie[:])
	m.h.Reset()
	m.h.Write(m.block[:])
	m.h.Write(msg)
	m.h.Sum(m.sum[:0])
	copy(out[:], m.sum[:macLen])
}

// cookieChecker is the server's side: it checks mac2 and makes cookie
// replies. Safe for concurrent use.
type cookieChecker struct {
	seal cipher.AEAD // XChaCha20-Poly1305 under cookieSealKey

	mu       sync.Mutex
	secretAt time.Time
	keyed    hash.Hash // BLAKE2s-128 keyed with the current secret: cookie = keyed(source)
	mac2     *mac2er
	now      func() time.Time
	// scratch, under mu (see mac2er)
	src    [18]byte
	sum    [16]byte
	cookie [cookieLen]byte
	want   [macLen]byte
}

func newCookieChecker(serverPub [32]byte) *cookieChecker {
	k := cookieSealKey(serverPub)
	seal, err := chacha20poly1305.NewX(k[:])
	if err != nil {
		panic(err) // a 32-byte key is always accepted
	}
	return &cookieChecker{seal: seal, mac2: newMAC2er(), now: time.Now}
}

// cookieLocked computes the cookie of src into c.cookie under the current
// secret, choosing a new secret when the current one is older than
// cookieRotate.
func (c *cookieChecker) cookieLocked(src netip.AddrPort) error {
	now := c.now()
	if c.keyed == nil || now.Sub(c.secretAt) >= cookieRotate {
		var secret [32]byte
		if _, err := rand.Read(secret[:]); err != nil {
			return fmt.Errorf("cookie secret: %w", err)
		}
		keyed, err := blake2s.New128(secret[:])
		if err != nil {
			return err
		}
		c.keyed, c.secretAt = keyed, now
	}
	ip := src.Addr().As16() // an IPv4 source as its v4-mapped form: one encoding per source
	copy(c.src[:], ip[:])
	c.src[16], c.src[17] = byte(src.Port()>>8), byte(src.Port())
	c.keyed.Reset()
	c.keyed.Write(c.src[:])
	c.keyed.Sum(c.sum[:0])
	c.cookie = c.sum
	return nil
}

// checkMAC2 reports whether in's mac2 is the one src's current cookie gives.
func (c *cookieChecker) checkMAC2(in initiation, src netip.AddrPort) bool {
	var zero [macLen]byte
	if subtle.ConstantTimeCompare(in.mac2, zero[:]) == 1 {
		return false // no cookie yet: not worth two hashes
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keyed == nil || c.now().Sub(c.secretAt) >= cookieRotate {
		return false // no secret, or expired: no cookie can be valid
	}
	if err := c.cookieLocked(src); err != nil {
		return false
	}
	c.mac2.compute(&c.cookie, in.beforeM2, &c.want)
	return subtle.ConstantTimeCompare(c.want[:], in.mac2) == 1
}

// appendReply appends the cookie reply to in (from src) to dst.
func (c *cookieChecker) appendReply(dst []byte, in initiation, src netip.AddrPort) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.cookieLocked(src); err != nil {
		return dst, err
	}
	at := len(dst)
	dst = append(dst, make([]byte, headerLen+indexLen+chacha20poly1305.NonceSizeX)...)
	putHeader(dst[at:], TypeCookieReply)
	putIndex(dst[at+headerLen:], in.sender)
	nonce := dst[at+headerLen+indexLen:]
	if _, err := rand.Read(nonce); err != nil {
		return dst[:at], fmt.Errorf("cookie nonce: %w", err)
	}
	return c.seal.Seal(dst, nonce, c.cookie[:], in.mac1), nil
}

// cookieJar is the client's side: the cookie a server sent, used for mac2
// while it is fresh. Used by one dialing goroutine.
type cookieJar struct {
	open  cipher.AEAD
	mac2  *mac2er
	have  bool
	at    time.Time
	value [cookieLen]byte
	now   func() time.Time
}

func newCookieJar(serverPub [32]byte) *cookieJar {
	k := cookieSealKey(serverPub)
	open, err := chacha20poly1305.NewX(k[:])
	if err != nil {
		panic(err)
	}
	return &cookieJar{open: open, mac2: newMAC2er(), now: time.Now}
}

// consume opens a cookie reply to the initiation whose mac1 is mac1, and
// keeps its cookie. It reports whether the reply opened.
func (j *cookieJar) consume(reply, mac1 []byte) bool {
	if len(reply) != CookieReplyLen {
		return false
	}
	nonce := reply[headerLen+indexLen : headerLen+indexLen+chacha20poly1305.NonceSizeX]
	sealed := reply[headerLen+indexLen+chacha20poly1305.NonceSizeX:]
	var cookie [cookieLen]byte
	if _, err := j.open.Open(cookie[:0], nonce, sealed, mac1); err != nil {
		return false
	}
	j.value, j.have, j.at = cookie, true, j.now()
	return true
}

// stamp writes mac2 into an initiation built by appendInitiation, when the
// jar holds a fresh cookie; else mac2 stays zero.
func (j *cookieJar) stamp(datagram []byte) {
	if !j.have || j.now().Sub(j.at) >= cookieClientTTL {
		return
	}
	var m [macLen]byte
	j.mac2.compute(&j.value, datagram[:len(datagram)-macLen], &m)
	copy(datagram[len(datagram)-macLen:], m[:])
}
