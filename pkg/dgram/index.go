package dgram

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"
)

// indexTable maps the receiver indexes this side gave out to their
// sessions. An index is random, so that an off-path attacker has to guess
// 32 bits to even name a session (and then still needs a tag that opens).
// Only authenticated sessions are in it; its size is bounded all the same.
type indexTable struct {
	mu  sync.RWMutex
	m   map[uint32]*Session
	max int
}

var errTableFull = errors.New("too many datagram sessions")

func newIndexTable(max int) *indexTable {
	return &indexTable{m: map[uint32]*Session{}, max: max}
}

// add gives s a new random index and returns it.
func (t *indexTable) add(s *Session) (uint32, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) >= t.max {
		return 0, errTableFull
	}
	for {
		i, err := randomIndex()
		if err != nil {
			return 0, err
		}
		if _, taken := t.m[i]; !taken {
			t.m[i] = s
			return i, nil
		}
	}
}

// randomIndex is a random index other than 0 (0 marks "none").
func randomIndex() (uint32, error) {
	for {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return 0, err
		}
		if i := binary.LittleEndian.Uint32(b[:]); i != 0 {
			return i, nil
		}
	}
}

func (t *indexTable) lookup(i uint32) *Session {
	t.mu.RLock()
	s := t.m[i]
	t.mu.RUnlock()
	return s
}

// remove drops index i if it still belongs to s.
func (t *indexTable) remove(i uint32, s *Session) {
	t.mu.Lock()
	if t.m[i] == s {
		delete(t.m, i)
	}
	t.mu.Unlock()
}

func (t *indexTable) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m)
}

func (t *indexTable) all() []*Session {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]*Session, 0, len(t.m))
	for _, s := range t.m {
		out = append(out, s)
	}
	return out
}
