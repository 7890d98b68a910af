package tun

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockDir holds a lock file per TUN device name and network namespace,
// which the Keeper holds for its lifetime. TUNSETIFF alone refuses a second
// process only while the first one has the device open; the lock also
// covers the moments it does not (the Keeper recreating a deleted device,
// startup before the device exists), so a second gtun or gtund with the
// same tun name can never attach to, or later delete, the first one's
// device. It refuses at start with the holder's PID instead.
var LockDir = "/run/gtun"

// deviceLock is a held lock; closing the file releases it (as does the
// process's death, kill -9 included, so a stale lock never blocks a restart).
type deviceLock struct{ f *os.File }

func lockDevice(name string) (*deviceLock, error) {
	// Device names are per network namespace: two daemons in different
	// namespaces may both use "gtun0".
	ns := "host"
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err == nil {
		ns = strconv.FormatUint(st.Ino, 10)
	}
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return nil, fmt.Errorf("tun %s: lock directory: %w", name, err)
	}
	path := filepath.Join(LockDir, "tun-"+ns+"-"+name+".lock")
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("tun %s: lock: %w", name, err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			holder, _ := os.ReadFile(path)
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, fmt.Errorf("tun %s: %w: pid %s holds %s; run each daemon with its own tun name",
					name, ErrBusy, strings.TrimSpace(string(holder)), path)
			}
			return nil, fmt.Errorf("tun %s: lock %s: %w", name, path, err)
		}
		// The previous holder may have removed the file between our open
		// and flock: then this lock guards nothing; take the new file's.
		var fst, pst unix.Stat_t
		if unix.Fstat(int(f.Fd()), &fst) != nil || unix.Stat(path, &pst) != nil || fst.Ino != pst.Ino {
			f.Close()
			continue
		}
		_ = f.Truncate(0)
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		return &deviceLock{f: f}, nil
	}
}

// release removes the lock file and lets the lock go.
func (l *deviceLock) release() {
	if l == nil {
		return
	}
	_ = os.Remove(l.f.Name())
	l.f.Close()
}
