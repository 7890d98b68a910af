package guard

// loadIndex finds the source holding the most handshakes in progress among
// those with a waiting (evictable) connection, in constant time: a full
// guard looks for it on every admission, which under a flood from
// thousands of sources must not cost a scan of them all. Sources sit in
// levels by their pending count; each knows its level and slot there.
type loadIndex struct {
	levels [][]*source
	top    int // no level above it is non-empty
}

// update files s under its current load: in levels[s.pending] while it has
// a waiting connection, nowhere otherwise. Call it after every change to
// s.pending or s.waiting.
func (x *loadIndex) update(s *source) {
	want := -1
	if len(s.waiting) > 0 {
		want = s.pending
	}
	if want == s.level {
		return
	}
	if s.level >= 0 {
		lv := x.levels[s.level]
		last := lv[len(lv)-1]
		lv[s.slot], last.slot = last, s.slot
		lv[len(lv)-1] = nil
		x.levels[s.level] = lv[:len(lv)-1]
	}
	s.level = want
	if want < 0 {
		return
	}
	for len(x.levels) <= want {
		x.levels = append(x.levels, nil)
	}
	s.slot = len(x.levels[want])
	x.levels[want] = append(x.levels[want], s)
	x.top = max(x.top, want)
}

// heaviest is a source holding the most handshakes among those with a
// waiting connection, or nil.
func (x *loadIndex) heaviest() *source {
	for ; x.top > 0; x.top-- {
		if lv := x.levels[x.top]; len(lv) > 0 {
			return lv[len(lv)-1]
		}
	}
	return nil
}
