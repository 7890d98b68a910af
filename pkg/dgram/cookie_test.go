package dgram

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

var (
	serverPubForTest = [32]byte{9, 9, 9}
	clientAt         = netip.MustParseAddrPort("198.51.100.1:40000")
)

// initiationForTest is an initiation datagram with a made-up first message
// (mac1 is its last 16 bytes; this file does not check it).
func initiationForTest(t *testing.T, sender uint32, seed byte) ([]byte, initiation) {
	t.Helper()
	first := bytes.Repeat([]byte{seed}, 120)
	d := appendInitiation(nil, sender, first)
	in, ok := parseInitiation(d)
	if !ok {
		t.Fatal("initiation does not parse")
	}
	return d, in
}

// The round trip: server sends a cookie reply, the client opens it with
// its initiation's mac1 and stamps mac2 on the next initiation, which the
// server accepts from the same address and port only.
func TestCookieRoundTrip(t *testing.T) {
	checker := newCookieChecker(serverPubForTest)
	jar := newCookieJar(serverPubForTest)
	d1, in1 := initiationForTest(t, 11, 1)
	if checker.checkMAC2(in1, clientAt) {
		t.Fatal("an initiation without a cookie passed mac2")
	}
	reply, err := checker.appendReply(nil, in1, clientAt)
	if err != nil {
		t.Fatal(err)
	}
	if len(reply) != CookieReplyLen || reply[0] != TypeCookieReply || index(reply[headerLen:]) != 11 {
		t.Fatalf("cookie reply: %d bytes, type %d, receiver %d", len(reply), reply[0], index(reply[headerLen:]))
	}
	if len(reply) >= len(d1) {
		t.Errorf("cookie reply (%d bytes) not smaller than the initiation (%d): amplification", len(reply), len(d1))
	}
	if jar.consume(reply, bytes.Repeat([]byte{2}, macLen)) {
		t.Fatal("a cookie reply opened with another initiation's mac1")
	}
	if !jar.consume(reply, in1.mac1) {
		t.Fatal("cookie reply did not open with its initiation's mac1")
	}

	d2, in2 := initiationForTest(t, 12, 3)
	jar.stamp(d2)
	if bytes.Equal(in2.mac2, make([]byte, macLen)) {
		t.Fatal("no mac2 stamped")
	}
	if !checker.checkMAC2(in2, clientAt) {
		t.Fatal("mac2 from a fresh cookie refused")
	}
	for _, other := range []string{"198.51.100.1:40001", "198.51.100.7:40000", "[2001:db8::1]:40000"} {
		if checker.checkMAC2(in2, netip.MustParseAddrPort(other)) {
			t.Errorf("mac2 for %s accepted from %s", clientAt, other)
		}
	}
	// Tampering with what mac2 covers (here the sender index) fails it.
	d2[headerLen] ^= 1
	if checker.checkMAC2(in2, clientAt) {
		t.Error("mac2 accepted over a changed sender index")
	}
}

// The secret rotates: a cookie from before is refused after cookieRotate,
// and the client stops using one shortly before that.
func TestCookieRotation(t *testing.T) {
	now := t0
	checker := newCookieChecker(serverPubForTest)
	checker.now = func() time.Time { return now }
	jar := newCookieJar(serverPubForTest)
	jar.now = checker.now
	_, in1 := initiationForTest(t, 1, 1)
	reply, err := checker.appendReply(nil, in1, clientAt)
	if err != nil {
		t.Fatal(err)
	}
	if !jar.consume(reply, in1.mac1) {
		t.Fatal("cookie reply refused")
	}
	now = t0.Add(cookieClientTTL - time.Second)
	d2, in2 := initiationForTest(t, 2, 2)
	jar.stamp(d2)
	if !checker.checkMAC2(in2, clientAt) {
		t.Fatal("cookie refused within its lifetime")
	}
	now = t0.Add(cookieClientTTL)
	d3, in3 := initiationForTest(t, 3, 3)
	jar.stamp(d3)
	if !bytes.Equal(in3.mac2, make([]byte, macLen)) {
		t.Error("client stamped a cookie past its lifetime")
	}
	now = t0.Add(cookieRotate)
	if checker.checkMAC2(in2, clientAt) {
		t.Error("cookie accepted after the secret rotated")
	}
}

func TestCookieReplyTamperedOrShort(t *testing.T) {
	checker := newCookieChecker(serverPubForTest)
	jar := newCookieJar(serverPubForTest)
	_, in := initiationForTest(t, 5, 5)
	reply, _ := checker.appendReply(nil, in, clientAt)
	for i := headerLen + indexLen; i < len(reply); i++ {
		m := bytes.Clone(reply)
		m[i] ^= 0x80
		if jar.consume(m, in.mac1) {
			t.Fatalf("byte %d changed: cookie reply still opened", i)
		}
	}
	if jar.consume(reply[:len(reply)-1], in.mac1) {
		t.Fatal("short cookie reply opened")
	}
	// Another server's key cannot open it.
	if newCookieJar([32]byte{1}).consume(reply, in.mac1) {
		t.Fatal("cookie reply opened under another server's key")
	}
}

func TestCookieReplyAndCheckDoNotAllocate(t *testing.T) {
	checker := newCookieChecker(serverPubForTest)
	d, in := initiationForTest(t, 5, 5)
	copy(d[len(d)-macLen:], bytes.Repeat([]byte{1}, macLen)) // a wrong mac2: the full check runs
	buf := make([]byte, 0, 256)
	if _, err := checker.appendReply(buf, in, clientAt); err != nil { // the first picks a secret
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if checker.checkMAC2(in, clientAt) {
			t.Fatal("wrong mac2 accepted")
		}
		if _, err := checker.appendReply(buf[:0], in, clientAt); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per initiation under load", allocs)
	}
}
