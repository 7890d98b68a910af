package dgram

// replayWindow accepts each counter at most once, and none older than the
// window behind the highest seen: a sliding bitmap kept as a ring of 64-bit
// blocks (RFC 6479), so that moving the window forward clears whole blocks
// instead of shifting bits. Reordering up to windowSize datagrams deep is
// accepted (kcp keeps up to 4096 segments in flight; a burst reordered
// across them still opens); a duplicate or a replay is refused. Not safe
// for concurrent use: a session's opener serializes it.
type replayWindow struct {
	highest uint64 // highest counter accepted, once any has been
	any     bool
	ring    [ringBlocks]uint64
}

const (
	blockBits  = 64
	ringBlocks = 128 // a power of two
	// windowSize is how far behind the highest counter one still opens:
	// one block of the ring is always the one being filled.
	windowSize = (ringBlocks - 1) * blockBits
)

// check reports whether counter would be accepted, without recording it:
// the opener checks before it spends an AEAD open, and records after the
// tag has opened, so that a forged datagram moves nothing.
func (w *replayWindow) check(counter uint64) bool {
	if !w.any || counter > w.highest {
		return true
	}
	if w.highest-counter >= windowSize {
		return false
	}
	return w.ring[(counter/blockBits)%ringBlocks]&(1<<(counter%blockBits)) == 0
}

// accept records counter, which check has passed. It reports whether the
// window moved forward (counter is the new highest).
func (w *replayWindow) accept(counter uint64) (forward bool) {
	block := counter / blockBits
	if !w.any || counter > w.highest {
		if !w.any {
			clear(w.ring[:])
		} else {
			// Clear the blocks the window slides over, at most the whole ring.
			cur := w.highest / blockBits
			for i, n := cur+1, min(block-cur, ringBlocks); i <= cur+n; i++ {
				w.ring[i%ringBlocks] = 0
			}
		}
		w.highest, w.any, forward = counter, true, true
	}
	w.ring[block%ringBlocks] |= 1 << (counter % blockBits)
	return forward
}
