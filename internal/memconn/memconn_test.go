package memconn

import (
	"io"
	"syscall"
	"testing"
)

func TestPair(t *testing.T) {
	a, b, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	if _, ok := a.(syscall.Conn); !ok {
		t.Fatal("not a syscall.Conn: the direct write would not run over it")
	}
	go a.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("%q %v", buf, err)
	}
	a.Close()
	if _, err := b.Read(buf); err != io.EOF {
		t.Fatalf("read after the other end closed: %v, want EOF", err)
	}
}
