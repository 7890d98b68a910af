package integration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/gtun/gtun/internal/testnet"
	"github.com/gtun/gtun/pkg/packet"
)

// inNS runs f on a thread in the network namespace ns: sockets f creates
// live there, and stay there when used from any thread afterwards.
func inNS(t *testing.T, ns string, f func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		h, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// rawUDP sends hand-built IPv4/UDP packets from a host of the topology
// through a raw IP socket (IPPROTO_RAW: the header is the caller's,
// IP_HDRINCL), so their source address and port are whatever the attacker
// writes: forged packets, sent for real.
type rawUDP struct {
	fd  int
	buf []byte
	mu  sync.Mutex
}

func openRawUDP(t *testing.T, e *env, host string) *rawUDP {
	t.Helper()
	r := &rawUDP{fd: -1, buf: make([]byte, 0, 2048)}
	var err error
	inNS(t, e.tp.NS(host), func() {
		r.fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	})
	if err != nil {
		t.Fatalf("raw socket in %s: %v", host, err)
	}
	// Floods from many goroutines must not stall on a small buffer.
	_ = unix.SetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20)
	t.Cleanup(func() { unix.Close(r.fd) })
	return r
}

// send sends payload in a UDP datagram from src to dst, with valid IP and
// UDP checksums (the kernel forwards and delivers it like any other).
func (r *rawUDP) send(src, dst netip.AddrPort, payload []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.buf[:28+len(payload)]
	clear(p[:28])
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = unix.IPPROTO_UDP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], ^packet.Fold(packet.Sum(p[:20], 0)))
	binary.BigEndian.PutUint16(p[20:], src.Port())
	binary.BigEndian.PutUint16(p[22:], dst.Port())
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	// The UDP checksum covers a pseudo-header of addresses, protocol and length.
	sum := packet.Sum(p[12:20], uint32(unix.IPPROTO_UDP)+uint32(8+len(payload)))
	c := ^packet.Fold(packet.Sum(p[20:], sum))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(p[26:], c)
	for {
		err := unix.Sendto(r.fd, p, 0, &unix.SockaddrInet4{Addr: d})
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
			time.Sleep(100 * time.Microsecond) // as fast as the path takes them, not faster
			continue
		}
		return err
	}
}

// capturedUDP is a UDP datagram seen on the wire.
type capturedUDP struct {
	src, dst netip.AddrPort
	payload  []byte
}

// sniffer captures IPv4/UDP datagrams on an interface of a host: what an
// on-path observer of the wan sees (AF_PACKET sees outgoing frames too).
type sniffer struct {
	fd   int
	mu   sync.Mutex
	got  []capturedUDP
	keep func(capturedUDP) bool
	stop chan struct{}
	done chan struct{}
}

func startSniffer(t *testing.T, e *env, host, ifname string, keep func(capturedUDP) bool) *sniffer {
	t.Helper()
	s := &sniffer{keep: keep, stop: make(chan struct{}), done: make(chan struct{})}
	var err error
	inNS(t, e.tp.NS(host), func() {
		// ETH_P_ALL: only taps on every protocol see outgoing frames.
		proto := int(htons(unix.ETH_P_ALL))
		s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return
		}
		var ifindex int
		ifindex, err = ifIndex(ifname)
		if err != nil {
			return
		}
		err = unix.Bind(s.fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifindex})
		if err == nil {
			// A virtio-net header before each frame: a UDP GSO buffer
			// (the udp transport sends runs of datagrams in one) says its
			// datagrams' size there, and is cut into them as the wire
			// would carry them.
			err = unix.SetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1)
		}
	})
	if err != nil {
		t.Fatalf("sniffer on %s/%s: %v", host, ifname, err)
	}
	tv := unix.Timeval{Usec: 100_000}
	_ = unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	// A buffer for a burst: the tunnel moves a run of 45 datagrams in one
	// frame faster than this loop copies them out, and what the default
	// buffer (~200 KB) cannot hold is not seen (the checks for clear text
	// would look at part of the traffic only).
	if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20); err != nil {
		t.Fatalf("sniffer on %s/%s: receive buffer: %v", host, ifname, err)
	}
	go s.run()
	t.Cleanup(s.close)
	return s
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func ifIndex(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, err
	}
	return int(ifr.Uint32()), nil
}

func (s *sniffer) run() {
	defer close(s.done)
	buf := make([]byte, 65536)
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			continue // the receive timeout: look at stop again
		}
		if n < packet.VnetHdrLen {
			continue
		}
		vh := packet.DecodeVnetHdr(buf)
		f := buf[packet.VnetHdrLen:n]
		if len(f) < 14+28 || binary.BigEndian.Uint16(f[12:]) != unix.ETH_P_IP {
			continue
		}
		ip := f[14:]
		ihl := int(ip[0]&0x0f) * 4
		if ip[0]>>4 != 4 || ip[9] != unix.IPPROTO_UDP || len(ip) < ihl+8 {
			continue
		}
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if total > len(ip) || total < ihl+8 {
			continue
		}
		udp := ip[ihl:total]
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), binary.BigEndian.Uint16(udp))
		dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(udp[2:]))
		seg := len(udp) - 8
		if vh.GSOType&^packet.GSOECN == packet.GSOUDPL4 && vh.GSOSize > 0 {
			seg = int(vh.GSOSize)
		}
		for p := udp[8:]; len(p) > 0; {
			c := capturedUDP{src: src, dst: dst, payload: append([]byte(nil), p[:min(seg, len(p))]...)}
			p = p[len(c.payload):]
			if s.keep(c) {
				s.mu.Lock()
				s.got = append(s.got, c)
				s.mu.Unlock()
			}
		}
	}
}

// captured returns what was kept so far.
func (s *sniffer) captured() []capturedUDP {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]capturedUDP(nil), s.got...)
}

func (s *sniffer) close() {
	select {
	case <-s.stop:
		return
	default:
	}
	close(s.stop)
	<-s.done
	unix.Close(s.fd)
}

// The attack tools themselves: a datagram forged in vm with a source that
// is not vm's arrives in gw with that source, and the sniffer on vm's wan
// sees it leave.
func TestRawUDPForgesSource(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var ln *net.UDPConn
	inNS(t, e.tp.NS("gw"), func() {
		var err error
		if ln, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(gwWAN), Port: 9999}); err != nil {
			t.Fatal(err)
		}
	})
	defer ln.Close()
	forged := netip.MustParseAddrPort("203.0.113.77:4242")
	dst := netip.MustParseAddrPort(gwWAN + ":9999")
	sn := startSniffer(t, e, "vm", "wan0", func(c capturedUDP) bool { return c.dst == dst })
	raw := openRawUDP(t, e, "vm")
	if err := raw.send(forged, dst, []byte("forged")); err != nil {
		t.Fatal(err)
	}
	_ = ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, from, err := ln.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("forged datagram not received: %v", err)
	}
	if from != forged || string(buf[:n]) != "forged" {
		t.Fatalf("received %q from %v, want %q from %v", buf[:n], from, "forged", forged)
	}
	testnet.Eventually(t, 5*time.Second, func() error {
		if c := sn.captured(); len(c) != 1 || c[0].src != forged || string(c[0].payload) != "forged" {
			return fmt.Errorf("sniffer saw %v", c)
		}
		return nil
	})
}
