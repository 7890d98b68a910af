package secure

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// tcpPair is a sender and a receiver Conn (keys without a handshake) over
// a loopback TCP connection with small socket buffers, so that a receiver
// that does not read fills the sender's socket within a few records.
func tcpPair(t testing.TB, limits keyLimits) (send, recv *Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	out, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	in := <-accepted
	if in == nil {
		t.Fatal("accept failed")
	}
	_ = out.(*net.TCPConn).SetWriteBuffer(16 << 10)
	_ = in.(*net.TCPConn).SetReadBuffer(16 << 10)
	a, b := keyPair()
	if send, err = newConn(out, AES128GCM, a, b); err != nil {
		t.Fatal(err)
	}
	if recv, err = newConn(in, AES128GCM, b, a); err != nil {
		t.Fatal(err)
	}
	send.limits = limits
	t.Cleanup(func() { send.Close(); recv.Close() })
	return send, recv
}

// numbered is a packet record of about size bytes whose payload starts
// with its number.
func numbered(i, size int) []byte {
	p := fmt.Sprintf("%08d", i)
	return packetRec(p + strings.Repeat("x", size-len(p)))
}

// With a receiver that does not read, TryWritePackets fills the socket and
// never waits: the record the socket takes only part of (or none of) is
// kept; meanwhile the connection is busy for TryWritePackets without
// sealing anything. Once the receiver reads, Flush sends the tail, and
// every record (key updates among them, every few records here) arrives
// once, in order, with those of WritePackets and WriteRecord after it.
func TestTryWritePacketsNeverWaitsAndKeepsOrder(t *testing.T) {
	const never = uint64(1) << 40
	send, recv := tcpPair(t, keyLimits{rekeyRecords: 5, rekeyBytes: never, maxRecords: never, maxBytes: never})
	next, sent := 0, 0
	for {
		start := time.Now()
		res, err := send.TryWritePackets(numbered(next, 16<<10))
		if took := time.Since(start); took > time.Second {
			t.Fatalf("TryWritePackets waited %v", took)
		}
		if err != nil {
			t.Fatal(err)
		}
		if res == TryBusy {
			t.Fatalf("busy after %d records, with no tail", next)
		}
		next++
		if res == TryTail {
			break
		}
		sent++
		if next > 10000 {
			t.Fatal("the socket never filled")
		}
	}
	t.Logf("the socket took %d records of 16 KiB whole, then part of one", sent)
	for range 3 {
		if res, err := send.TryWritePackets(numbered(999999, 100)); res != TryBusy || err != nil {
			t.Fatalf("with a tail pending: %v %v, want busy", res, err)
		}
	}

	got := make(chan []string, 1)
	go func() {
		buf := make([]byte, maxRecordCipher)
		var out []string
		for {
			typ, payload, err := recv.ReadRecord(func(int) []byte { return buf })
			if err != nil {
				if !errors.Is(err, io.EOF) {
					out = append(out, "error: "+err.Error())
				}
				got <- out
				return
			}
			out = append(out, fmt.Sprintf("%d:%s", typ, payload[:8]))
		}
	}()
	if err := send.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := send.WritePackets(numbered(next, 100)); err != nil {
		t.Fatal(err)
	}
	next++
	if err := send.WriteRecord(TypeControl, []byte("control!")); err != nil {
		t.Fatal(err)
	}
	if res, err := send.TryWritePackets(numbered(next, 100)); res != TrySent || err != nil {
		t.Fatalf("with the receiver reading: %v %v", res, err)
	}
	next++
	send.conn.(*net.TCPConn).CloseWrite()
	records := <-got
	var want []string
	for i := range next - 1 {
		want = append(want, fmt.Sprintf("%d:%08d", TypePacket, i))
	}
	want = append(want, fmt.Sprintf("%d:control!", TypeControl), fmt.Sprintf("%d:%08d", TypePacket, next-1))
	if strings.Join(records, " ") != strings.Join(want, " ") {
		t.Fatalf("received\n%v\nwant\n%v", records, want)
	}
	if sentKeys, _ := send.Rekeys(); sentKeys == 0 {
		t.Error("no key update happened: the test did not cover one in a tail")
	}
}

// A connection that is not a socket cannot be written without waiting: it
// is always busy, and seals nothing (the next record is still number 0).
func TestTryWritePacketsNotASocket(t *testing.T) {
	a, b := net.Pipe()
	k1, k2 := keyPair()
	send, err := newConn(a, AES128GCM, k1, k2)
	if err != nil {
		t.Fatal(err)
	}
	recv, err := newConn(b, AES128GCM, k2, k1)
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	defer recv.Close()
	if res, err := send.TryWritePackets(packetRec("first")); res != TryBusy || err != nil {
		t.Fatalf("over a pipe: %v %v, want busy", res, err)
	}
	go send.WritePackets(packetRec("first"))
	buf := make([]byte, maxRecordCipher)
	if typ, payload, err := recv.ReadRecord(func(int) []byte { return buf }); err != nil || typ != TypePacket || string(payload) != "first" {
		t.Fatalf("read %d %q %v", typ, payload, err)
	}
}

// Busy while another write holds the connection, without waiting for it.
func TestTryWritePacketsBusyDuringAnotherWrite(t *testing.T) {
	send, _ := tcpPair(t, defaultKeyLimits)
	send.wmu.Lock()
	res, err := send.TryWritePackets(packetRec("x"))
	send.wmu.Unlock()
	if res != TryBusy || err != nil {
		t.Fatalf("%v %v, want busy", res, err)
	}
}

// The direct path allocates nothing per packet.
func TestTryWritePacketsAllocs(t *testing.T) {
	send, recv := tcpPair(t, defaultKeyLimits)
	_ = recv.conn.(*net.TCPConn).SetReadBuffer(4 << 20)
	go func() {
		buf := make([]byte, maxRecordCipher)
		for {
			if _, _, err := recv.ReadRecord(func(int) []byte { return buf }); err != nil {
				return
			}
		}
	}()
	rec := numbered(0, 1400)
	tails := 0
	n := testing.AllocsPerRun(2000, func() {
		res, err := send.TryWritePackets(rec)
		if err != nil {
			t.Fatal(err)
		}
		if res == TryTail {
			tails++
			if err := send.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	})
	if n != 0 {
		t.Errorf("%v allocations per packet (%d tails)", n, tails)
	}
}
