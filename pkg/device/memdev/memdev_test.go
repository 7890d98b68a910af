package memdev

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/gtun/gtun/pkg/packet"
)

func TestInjectReadWriteTake(t *testing.T) {
	d := New("gtun0", true)
	frame := append(make([]byte, packet.VnetHdrLen), 0x45, 1, 2, 3)
	if !d.Inject(frame) {
		t.Fatal("Inject refused")
	}
	frame[packet.VnetHdrLen] = 0 // Inject copied it
	b := packet.Get()
	defer packet.Put(b)
	if err := d.ReadFrame(b, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), append(make([]byte, packet.VnetHdrLen), 0x45, 1, 2, 3)) {
		t.Fatalf("read % x", b.Bytes())
	}
	if err := d.WriteFrame(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	b.B[packet.VnetHdrLen] = 0 // WriteFrame copied it
	if got, ok := d.Next(0); !ok || got[packet.VnetHdrLen] != 0x45 {
		t.Fatalf("written frame %v %v", got, ok)
	}
	if _, ok := d.Next(0); ok {
		t.Fatal("a second frame out of one write")
	}
}

func TestOverflowDiscardFailClose(t *testing.T) {
	d := New("gtun0", false)
	f := make([]byte, packet.VnetHdrLen+20)
	for range Queue + 3 {
		if err := d.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	if d.Writes.Load() != Queue+3 || d.Overflow.Load() != 3 {
		t.Errorf("writes %d overflow %d", d.Writes.Load(), d.Overflow.Load())
	}
	d.Discard()
	if err := d.WriteFrame(f); err != nil || d.Overflow.Load() != 3 {
		t.Errorf("discarding write: %v, overflow %d", err, d.Overflow.Load())
	}
	boom := errors.New("boom")
	d.FailWrites(boom)
	if err := d.WriteFrame(f); !errors.Is(err, boom) {
		t.Errorf("write = %v, want boom", err)
	}
	d.FailWrites(nil)
	if err := d.Set(1400, []netip.Prefix{netip.MustParsePrefix("100.64.240.2/24")}); err != nil {
		t.Fatal(err)
	}
	if mtu, addrs := d.Config(); mtu != 1400 || len(addrs) != 1 {
		t.Errorf("config %d %v", mtu, addrs)
	}
	d.Close()
	d.Close()
	if d.Inject(f) {
		t.Error("Inject into a closed device")
	}
	if err := d.ReadFrame(packet.Get(), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("read after close = %v", err)
	}
	if err := d.WriteFrame(f); !errors.Is(err, ErrClosed) {
		t.Errorf("write after close = %v", err)
	}
}
