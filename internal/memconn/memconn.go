// Package memconn makes connected pairs of stream sockets that live in
// memory (socketpair(2), AF_UNIX): sessions run over them as over TCP,
// with the kernel's socket buffers and the direct non-waiting write
// (they are syscall.Conns), but need no address, port or root.
package memconn

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// Pair returns the two ends of a new connection.
func Pair() (net.Conn, net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	a, err := fileConn(fds[0], "memconn-a")
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, err
	}
	b, err := fileConn(fds[1], "memconn-b")
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// fileConn makes a net.Conn of fd, which it owns from then on.
func fileConn(fd int, name string) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close() // FileConn holds a duplicate
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	return c, nil
}
