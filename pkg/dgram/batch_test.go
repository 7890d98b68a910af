package dgram

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/testnet"
)

func udpPair(t *testing.T, network, addr string) (*net.UDPConn, *net.UDPConn) {
	t.Helper()
	ln, err := net.ListenUDP(network, &net.UDPAddr{IP: net.ParseIP(addr)})
	if err != nil {
		// IPv6 may be off on a developer's machine; in CI it must be there.
		testnet.Missing(t, fmt.Sprintf("%s loopback: %v", network, err))
	}
	_ = ln.SetReadBuffer(socketBuffer)
	c, err := net.DialUDP(network, nil, ln.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); c.Close() })
	return ln, c
}

// recvmmsg: many datagrams per read, each with its own source, an
// oversize one marked as such, on IPv4 and IPv6 sockets.
func TestBatchReader(t *testing.T) {
	for _, fam := range []struct{ network, addr string }{{"udp4", "127.0.0.1"}, {"udp6", "::1"}} {
		t.Run(fam.network, func(t *testing.T) {
			ln, c1 := udpPair(t, fam.network, fam.addr)
			c2, err := net.DialUDP(fam.network, nil, ln.LocalAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			const n = 150
			for i := range n {
				c := c1
				if i%2 == 1 {
					c = c2
				}
				if _, err := c.Write(fmt.Appendf(nil, "datagram %d", i)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := c1.Write(make([]byte, MaxDatagram+100)); err != nil {
				t.Fatal(err)
			}
			br, err := newBatchReader(ln, MaxDatagram+1)
			if err != nil {
				t.Fatal(err)
			}
			got, reads := 0, 0
			for got <= n {
				k, err := br.read()
				if err != nil {
					t.Fatal(err)
				}
				reads++
				for i := range k {
					d, from := br.datagram(i)
					want := c1.LocalAddr().(*net.UDPAddr).AddrPort()
					if got%2 == 1 {
						want = c2.LocalAddr().(*net.UDPAddr).AddrPort()
					}
					want = netip.AddrPortFrom(want.Addr().Unmap(), want.Port())
					if got == n {
						if len(d) <= MaxDatagram {
							t.Fatalf("an oversize datagram read as %d bytes", len(d))
						}
					} else if string(d) != fmt.Sprintf("datagram %d", got) || from != want {
						t.Fatalf("datagram %d: %q from %v, want from %v", got, d, from, want)
					}
					got++
				}
			}
			t.Logf("%d datagrams in %d reads", got, reads)
			if reads > n/2 {
				t.Errorf("%d reads for %d datagrams already waiting: not batched", reads, got)
			}
		})
	}
}

// sendmmsg: an idle datagram goes at once, a burst in batches, in order,
// to each its own destination (a server's writer) or the connected peer.
func TestBatchWriter(t *testing.T) {
	for _, connected := range []bool{false, true} {
		t.Run(fmt.Sprint("connected=", connected), func(t *testing.T) {
			ln, c := udpPair(t, "udp4", "127.0.0.1")
			other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.1")})
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			sender := c
			if !connected {
				sender, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.1")})
				if err != nil {
					t.Fatal(err)
				}
				defer sender.Close()
			}
			var errs drops
			directs := 0
			w, err := newBatchWriter(sender, connected, &errs, func(b []byte, to netip.AddrPort) error {
				directs++
				if connected {
					_, err := sender.Write(b)
					return err
				}
				_, err := sender.WriteToUDPAddrPort(b, to)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			// Read while sending: a socket buffer holds only so much.
			type rcvd struct {
				b   []byte
				err error
			}
			const n = 500
			got := make(chan rcvd, n+1)
			go func() {
				_ = ln.SetReadDeadline(time.Now().Add(10 * time.Second))
				for range n + 1 {
					buf := make([]byte, 2000)
					k, _, err := ln.ReadFromUDPAddrPort(buf)
					got <- rcvd{buf[:k], err}
					if err != nil {
						return
					}
				}
			}()
			dst := ln.LocalAddr().(*net.UDPAddr).AddrPort()
			w.send([]byte("idle"), dst)
			if directs != 1 {
				t.Fatalf("an idle datagram took the batch (%d direct)", directs)
			}
			msg := make([]byte, 1000)
			for i := range n {
				binary.BigEndian.PutUint32(msg, uint32(i))
				w.send(msg, dst)
				if !connected && i%10 == 0 {
					w.send([]byte("elsewhere"), other.LocalAddr().(*net.UDPAddr).AddrPort())
				}
			}
			w.close()
			if r := <-got; r.err != nil || string(r.b) != "idle" {
				t.Fatalf("first datagram %q, %v", r.b, r.err)
			}
			var nums []uint32
			for i := range n {
				r := <-got
				if r.err != nil {
					t.Fatalf("datagram %d: %v (send errors %v; received %v)", i, r.err, errs.Snapshot(), nums)
				}
				if len(r.b) != len(msg) || !bytes.Equal(r.b[4:], msg[4:]) {
					t.Fatalf("datagram %d damaged: %d bytes", i, len(r.b))
				}
				nums = append(nums, binary.BigEndian.Uint32(r.b))
			}
			for i, num := range nums {
				if num != uint32(i) {
					t.Fatalf("datagram %d is number %d: out of order (received %v)", i, num, nums)
				}
			}
			buf := make([]byte, 2000)
			if !connected {
				_ = other.SetReadDeadline(time.Now().Add(5 * time.Second))
				for i := range n / 10 {
					k, _, err := other.ReadFromUDPAddrPort(buf)
					if err != nil || string(buf[:k]) != "elsewhere" {
						t.Fatalf("datagram %d to the other destination: %q, %v", i, buf[:k], err)
					}
				}
			}
			if directs > n/20 {
				t.Errorf("%d of %d datagrams of a burst sent one by one", directs, n)
			}
		})
	}
}

func TestBatchWriterDoesNotAllocate(t *testing.T) {
	ln, c := udpPair(t, "udp4", "127.0.0.1")
	_ = ln.SetReadBuffer(8 << 20)
	var errs drops
	w, err := newBatchWriter(c, true, &errs, func(b []byte, _ netip.AddrPort) error { _, err := c.Write(b); return err })
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	msg := make([]byte, 1400)
	dst := ln.LocalAddr().(*net.UDPAddr).AddrPort()
	allocs := testing.AllocsPerRun(2000, func() { w.send(msg, dst) })
	if allocs != 0 {
		t.Fatalf("%.2f allocations per datagram", allocs)
	}
}
