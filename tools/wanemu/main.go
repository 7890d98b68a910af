// Command wanemu is a small WAN emulator for gtun's test topology: a
// transparent bump in the wire between two Ethernet interfaces (veth ends in
// a middle network namespace, see scripts/topology.sh --wanemu). Every frame
// read from one interface is held for -delay, dropped with probability
// -loss percent, and written out unchanged on the other interface; both
// directions, each with its own delay queue and loss draw (so a round trip
// sees 2×delay and loss compounds over the two directions).
//
//	wanemu -a a -b b -delay 25ms -loss 1 [-blackhole-file PATH] [-stats-file PATH] [-pidfile PATH]
//
// How: one AF_PACKET socket per interface for reading (ETH_P_ALL, outgoing
// frames ignored, promiscuous) and one for writing, all with PACKET_VNET_HDR
// so a frame whose checksum the sender left to offload (CHECKSUM_PARTIAL) is
// re-injected as such and not dropped by the receiver as corrupt. GSO
// super-packets must not reach the emulator: the endpoints' interfaces are
// set to gso_max_segs 1 (topology.sh does it), so the loss draw is per
// wire-sized frame. A frame larger than the buffers (-frame-size, default
// from the MTU) is dropped and counted as "oversize"; one that carries GSO
// metadata and still fits is forwarded and counted as "gso". Either being
// non-zero means the endpoints leak super-packets.
//
// Queues are bounded (-queue-frames, -queue-bytes per direction); a frame that
// does not fit is dropped and counted. Frames are released in arrival order by
// a thread sleeping in clock_nanosleep with 1 µs timer slack; buffers come
// from a fixed pool, nothing is allocated per frame. With -delay 0 a frame is
// written by the reading thread right away (no queue).
//
// While the -blackhole-file exists (polled every 10 ms) every frame is
// dropped. SIGUSR1 prints the counters (and writes them as JSON to
// -stats-file if given); SIGTERM or SIGINT prints them and exits 0.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gtun/gtun/internal/wanstats"
)

const vnetHdrLen = 10 // struct virtio_net_hdr

func main() {
	ifA := flag.String("a", "a", "first interface")
	ifB := flag.String("b", "b", "second interface")
	delay := flag.Duration("delay", 0, "one-way delay added in each direction (e.g. 25ms for a 50 ms round trip)")
	loss := flag.Float64("loss", 0, "percent of frames dropped at random, in each direction independently (0-100)")
	qFrames := flag.Int("queue-frames", 4096, "delay queue bound per direction, in frames")
	qBytes := flag.Int64("queue-bytes", 16<<20, "delay queue bound per direction, in bytes")
	frameSize := flag.Int("frame-size", 0, "largest frame forwarded, bytes (0: max MTU of the two interfaces + 18)")
	blackhole := flag.String("blackhole-file", "", "while this file exists, drop every frame")
	statsFile := flag.String("stats-file", "", "write the counters as JSON here on SIGUSR1 and at exit")
	pidFile := flag.String("pidfile", "", "write the process ID here once forwarding (removed at exit)")
	seed := flag.Uint64("seed", 0, "seed of the loss draws (0: random)")
	flag.Parse()
	if flag.NArg() > 0 || *ifA == *ifB || *delay < 0 || *loss < 0 || *loss > 100 || *qFrames < 1 || *qBytes < 1 {
		fmt.Fprintln(os.Stderr, "usage: wanemu -a IF -b IF [-delay D] [-loss PCT] [-blackhole-file F] [-stats-file F] [-pidfile F]")
		flag.PrintDefaults()
		os.Exit(2)
	}
	if *seed == 0 {
		*seed = rand.Uint64()
	}

	e := &emu{delay: *delay, lossPct: *loss, blackholeFile: *blackhole, start: time.Now()}
	a, err := openLink(*ifA)
	if err != nil {
		fatal(err)
	}
	b, err := openLink(*ifB)
	if err != nil {
		fatal(err)
	}
	size := *frameSize
	if size <= 0 {
		size = max(a.mtu, b.mtu) + 18 // Ethernet header and one VLAN tag
	}
	bufSize := vnetHdrLen + size
	e.dirs = [2]*direction{
		newDirection(a.name+"->"+b.name, a.rx, b.tx, bufSize, *qFrames, *qBytes, *seed, e),
		newDirection(b.name+"->"+a.name, b.rx, a.tx, bufSize, *qFrames, *qBytes, *seed^0x9e3779b97f4a7c15, e),
	}
	if e.blackholeFile != "" {
		e.pollBlackhole()
		go func() {
			for !e.stop.Load() {
				time.Sleep(10 * time.Millisecond)
				e.pollBlackhole()
			}
		}()
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	var wg sync.WaitGroup
	for _, d := range e.dirs {
		wg.Add(1)
		go func() { defer wg.Done(); d.readLoop() }()
		if e.delay > 0 {
			wg.Add(1)
			go func() { defer wg.Done(); d.releaseLoop() }()
		}
	}
	if *pidFile != "" {
		if err := writeAtomic(*pidFile, []byte(strconv.Itoa(os.Getpid())+"\n")); err != nil {
			fatal(err)
		}
	}
	fmt.Printf("wanemu: ready: %s <-> %s delay %v loss %g%% each way, queue %d frames / %d bytes per direction, frames up to %d bytes, blackhole file %q, seed %d\n",
		a.name, b.name, e.delay, e.lossPct, *qFrames, *qBytes, size, e.blackholeFile, *seed)

	for sig := range sigs {
		if sig == syscall.SIGUSR1 {
			e.report(*statsFile, false)
			continue
		}
		break
	}
	e.stop.Store(true)
	for _, d := range e.dirs {
		close(d.done)
	}
	wg.Wait()
	e.report(*statsFile, true)
	if *pidFile != "" {
		os.Remove(*pidFile)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "wanemu:", err)
	os.Exit(1)
}

type emu struct {
	delay         time.Duration
	lossPct       float64
	blackholeFile string
	start         time.Time // frame timestamps are nanoseconds since start (monotonic)
	blackholed    atomic.Bool
	stop          atomic.Bool
	dirs          [2]*direction
}

func (e *emu) now() int64 { return int64(time.Since(e.start)) }

func (e *emu) pollBlackhole() {
	var st unix.Stat_t
	on := unix.Stat(e.blackholeFile, &st) == nil
	if e.blackholed.Swap(on) != on {
		fmt.Printf("wanemu: blackhole %s\n", map[bool]string{true: "on", false: "off"}[on])
	}
}

// link is one interface: a socket to read it and one to write to it.
type link struct {
	name   string
	mtu    int
	rx, tx int
}

func openLink(name string) (*link, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, err
	}
	l := &link{name: name, mtu: ifi.MTU}
	// Reader: every frame arriving on the interface, whatever its MAC
	// destination; not the ones we send ourselves.
	l.rx, err = packetSocket(ifi.Index, unix.ETH_P_ALL)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := unix.SetsockoptInt(l.rx, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return nil, fmt.Errorf("%s: PACKET_IGNORE_OUTGOING: %w", name, err)
	}
	mreq := unix.PacketMreq{Ifindex: int32(ifi.Index), Type: unix.PACKET_MR_PROMISC}
	if err := unix.SetsockoptPacketMreq(l.rx, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
		return nil, fmt.Errorf("%s: promiscuous mode: %w", name, err)
	}
	if err := unix.SetsockoptInt(l.rx, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20); err != nil {
		return nil, fmt.Errorf("%s: SO_RCVBUFFORCE: %w", name, err)
	}
	// a timeout so the reading thread notices a stop request
	tv := unix.Timeval{Usec: 100_000}
	if err := unix.SetsockoptTimeval(l.rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("%s: SO_RCVTIMEO: %w", name, err)
	}
	// Writer: bound with protocol 0, so it receives nothing and the kernel
	// takes each frame's protocol from its Ethernet header.
	l.tx, err = packetSocket(ifi.Index, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := unix.SetsockoptInt(l.tx, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20); err != nil {
		return nil, fmt.Errorf("%s: SO_SNDBUFFORCE: %w", name, err)
	}
	return l, nil
}

func packetSocket(ifindex int, proto uint16) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(proto)))
	if err != nil {
		return -1, fmt.Errorf("AF_PACKET socket: %w", err)
	}
	// before bind: the header must be on for every frame the socket sees
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("PACKET_VNET_HDR: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind: %w", err)
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

type frame struct {
	buf []byte // vnet header + Ethernet frame
	n   int    // bytes used in buf
	due int64  // release time, ns since emu.start
}

// direction forwards frames from one interface to the other.
type direction struct {
	name      string
	e         *emu
	rx, tx    int
	bufSize   int
	rng       *rand.Rand
	lossLimit uint64 // a frame is lost when a uniform uint64 draw is below this

	free   chan *frame // the pool
	queue  chan *frame // FIFO, in arrival order
	qBytes atomic.Int64
	maxQ   int64
	done   chan struct{}
	reads  uint32 // reading thread only

	c counters
}

type counters struct {
	Rx          atomic.Uint64
	RxBytes     atomic.Uint64
	Tx          atomic.Uint64
	TxBytes     atomic.Uint64
	Lost        atomic.Uint64
	Blackholed  atomic.Uint64
	QueueFull   atomic.Uint64
	Oversize    atomic.Uint64
	GSO         atomic.Uint64
	TxErrors    atomic.Uint64
	Flushed     atomic.Uint64
	KernelDrops atomic.Uint64
	QueuePeak   atomic.Uint64
	LateMaxNs   atomic.Uint64
	LateSumNs   atomic.Uint64
}

func newDirection(name string, rx, tx, bufSize, qFrames int, qBytes int64, seed uint64, e *emu) *direction {
	d := &direction{
		name: name, e: e, rx: rx, tx: tx, bufSize: bufSize,
		rng:   rand.New(rand.NewPCG(seed, seed^0xda3e39cb94b95bdb)),
		free:  make(chan *frame, qFrames+1),
		queue: make(chan *frame, qFrames+1),
		maxQ:  qBytes,
		done:  make(chan struct{}),
	}
	switch p := e.lossPct / 100; {
	case p <= 0:
		d.lossLimit = 0
	case p >= 1:
		d.lossLimit = math.MaxUint64
	default:
		d.lossLimit = uint64(p * (1 << 64))
	}
	if e.delay > 0 {
		// one slab for the whole pool
		slab := make([]byte, (qFrames+1)*bufSize)
		frames := make([]frame, qFrames+1)
		for i := range frames {
			frames[i].buf = slab[i*bufSize : (i+1)*bufSize : (i+1)*bufSize]
			d.free <- &frames[i]
		}
	}
	return d
}

// recv reads one frame into buf; n is its full length (larger than buf if
// it was truncated). ok is false when the read timed out or was interrupted.
func (d *direction) recv(buf []byte) (n int, ok bool, err error) {
	r, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(d.rx), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), unix.MSG_TRUNC, 0, 0)
	switch errno {
	case 0:
		return int(r), true, nil
	case unix.EAGAIN, unix.EINTR:
		return 0, false, nil
	default:
		return 0, false, errno
	}
}

func (d *direction) send(buf []byte) {
	_, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(d.tx), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0, 0)
	if errno != 0 {
		d.c.TxErrors.Add(1)
		return
	}
	d.c.Tx.Add(1)
	d.c.TxBytes.Add(uint64(len(buf) - vnetHdrLen))
}

// admit counts a received frame and decides whether it is forwarded.
func (d *direction) admit(buf []byte, n int) bool {
	d.c.Rx.Add(1)
	if n > len(buf) {
		d.c.RxBytes.Add(uint64(n - vnetHdrLen))
		if d.c.Oversize.Add(1) == 1 {
			fmt.Printf("wanemu: %s: dropped a %d-byte frame (buffers hold %d): super-packets (GSO/GRO) reach the emulator; set gso_max_segs 1 on the endpoints\n",
				d.name, n-vnetHdrLen, len(buf)-vnetHdrLen)
		}
		return false
	}
	if n < vnetHdrLen+14 {
		return false
	}
	d.c.RxBytes.Add(uint64(n - vnetHdrLen))
	if buf[1]&^0x80 != unix.VIRTIO_NET_HDR_GSO_NONE { // gso_type without the ECN bit
		d.c.GSO.Add(1)
	}
	if d.e.blackholed.Load() {
		d.c.Blackholed.Add(1)
		return false
	}
	if d.lossLimit != 0 && d.rng.Uint64() < d.lossLimit {
		d.c.Lost.Add(1)
		return false
	}
	return true
}

func (d *direction) readLoop() {
	runtime.LockOSThread()
	if d.e.delay == 0 {
		// no queue: forward from the reading thread
		buf := make([]byte, d.bufSize)
		for !d.e.stop.Load() {
			n, ok, err := d.recv(buf)
			if err != nil {
				fatal(fmt.Errorf("%s: read: %w", d.name, err))
			}
			if ok && d.admit(buf, n) {
				d.send(buf[:n])
			}
			d.pollKernelDrops()
		}
		return
	}
	scratch := make([]byte, d.bufSize) // for frames that find the queue full
	var cur *frame
	for !d.e.stop.Load() {
		if cur == nil {
			select {
			case cur = <-d.free:
			default:
			}
		}
		buf := scratch
		if cur != nil {
			buf = cur.buf
		}
		n, ok, err := d.recv(buf)
		if err != nil {
			fatal(fmt.Errorf("%s: read: %w", d.name, err))
		}
		d.pollKernelDrops()
		if !ok || !d.admit(buf, n) {
			continue
		}
		if cur == nil || d.qBytes.Load()+int64(n) > d.maxQ {
			d.c.QueueFull.Add(1)
			continue
		}
		cur.n = n
		cur.due = d.e.now() + int64(d.e.delay)
		d.qBytes.Add(int64(n))
		d.queue <- cur // never blocks: the queue holds the whole pool
		if q := uint64(len(d.queue)); q > d.c.QueuePeak.Load() {
			d.c.QueuePeak.Store(q)
		}
		cur = nil
	}
}

// releaseLoop writes queued frames when they are due, in arrival order.
func (d *direction) releaseLoop() {
	runtime.LockOSThread()
	// This thread only sleeps and writes: a 1 µs timer slack instead of
	// the default 50 µs makes its wake-ups precise.
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1000, 0, 0, 0)
	var ts unix.Timespec
	for {
		var f *frame
		select {
		case f = <-d.queue:
		case <-d.done:
			for {
				select {
				case <-d.queue:
					d.c.Flushed.Add(1)
				default:
					return
				}
			}
		}
		for {
			wait := f.due - d.e.now()
			if wait <= 0 {
				break
			}
			ts = unix.NsecToTimespec(wait)
			_ = unix.ClockNanosleep(unix.CLOCK_MONOTONIC, 0, &ts, nil) // EINTR: loop
		}
		late := uint64(d.e.now() - f.due)
		d.send(f.buf[:f.n])
		d.c.LateSumNs.Add(late)
		if late > d.c.LateMaxNs.Load() {
			d.c.LateMaxNs.Store(late)
		}
		d.qBytes.Add(-int64(f.n))
		d.free <- f
	}
}

// pollKernelDrops adds the socket's own drop count (frames the kernel could
// not queue to us because we read too slowly) every 4096 reads. Only the
// reading thread calls it.
func (d *direction) pollKernelDrops() {
	d.reads++
	if d.reads%4096 != 0 {
		return
	}
	d.readKernelDrops()
}

func (d *direction) readKernelDrops() {
	// PACKET_STATISTICS resets the kernel's counters on every read
	st, err := unix.GetsockoptTpacketStats(d.rx, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err == nil {
		d.c.KernelDrops.Add(uint64(st.Drops))
	}
}

func (e *emu) stats(final bool) wanstats.Stats {
	s := wanstats.Stats{Time: time.Now().UTC().Format(time.RFC3339Nano), Final: final, DelayNs: int64(e.delay), LossPct: e.lossPct, Blackholed: e.blackholed.Load()}
	for _, d := range e.dirs {
		d.readKernelDrops()
		c := &d.c
		ds := wanstats.Direction{
			Name: d.name, Rx: c.Rx.Load(), RxBytes: c.RxBytes.Load(), Tx: c.Tx.Load(), TxBytes: c.TxBytes.Load(),
			Lost: c.Lost.Load(), Blackholed: c.Blackholed.Load(), QueueFull: c.QueueFull.Load(), Oversize: c.Oversize.Load(),
			GSO: c.GSO.Load(), TxErrors: c.TxErrors.Load(), Flushed: c.Flushed.Load(), KernelDrops: c.KernelDrops.Load(),
			QueuePeakFrames: c.QueuePeak.Load(), LateMaxUs: float64(c.LateMaxNs.Load()) / 1e3,
		}
		if e.delay > 0 && ds.Tx > 0 {
			ds.LateAvgUs = float64(c.LateSumNs.Load()) / float64(ds.Tx) / 1e3
		}
		s.Directions = append(s.Directions, ds)
	}
	return s
}

func (e *emu) report(statsFile string, final bool) {
	s := e.stats(final)
	for _, d := range s.Directions {
		lossPct := 0.0
		if d.Rx > 0 {
			lossPct = 100 * float64(d.Lost) / float64(d.Rx)
		}
		fmt.Printf("wanemu: %s: rx %d (%d B) tx %d (%d B) lost %d (%.2f%%) blackholed %d queue_full %d oversize %d gso %d tx_errors %d kernel_drops %d flushed %d queue_peak %d late avg %.1f µs max %.1f µs\n",
			d.Name, d.Rx, d.RxBytes, d.Tx, d.TxBytes, d.Lost, lossPct, d.Blackholed, d.QueueFull, d.Oversize, d.GSO,
			d.TxErrors, d.KernelDrops, d.Flushed, d.QueuePeakFrames, d.LateAvgUs, d.LateMaxUs)
	}
	if statsFile == "" {
		return
	}
	var sb strings.Builder
	enc := json.NewEncoder(&sb)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s)
	b := []byte(sb.String())
	if err := writeAtomic(statsFile, b); err != nil {
		fmt.Fprintln(os.Stderr, "wanemu:", err)
	}
}

func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return errors.Join(errors.New("writing "+path), err)
	}
	return nil
}
