package server

import (
	"log/slog"
	"sync"
	"time"

	"github.com/gtun/gtun/pkg/session"
)

// pusher sends the configs a reload pushes to one session, on a goroutine
// of that session's: the reload queues and goes on, so a client whose
// writes stall (blackholed, its socket buffer full) delays only its own
// config, never the reload or the other peers'. One config waits at most:
// a newer one replaces it unsent, since it says everything the older one
// did.
type pusher struct {
	mu   sync.Mutex
	next *session.Msg
	wake chan struct{} // one token: a config is waiting in next
}

func newPusher() *pusher { return &pusher{wake: make(chan struct{}, 1)} }

// push queues m for the session, in place of any config not yet sent. It
// never blocks.
func (p *pusher) push(m *session.Msg) {
	p.mu.Lock()
	p.next = m
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default: // a send is already due; it takes m
	}
}

// run sends what push queues on sess until done is closed. Its owner is
// the session's serveSession, which closes done once the session has
// ended (and with it any write in progress here).
func (p *pusher) run(sess *session.Session, done <-chan struct{}, log *slog.Logger, peer string) {
	for {
		select {
		case <-done:
			return
		case <-p.wake:
		}
		p.mu.Lock()
		m := p.next
		p.next = nil
		p.mu.Unlock()
		if m == nil {
			continue
		}
		if err := sess.SendControl(m); err != nil {
			log.Warn("reload: cannot push the new config", "peer", peer, "err", err)
		}
	}
}

// disconnectGrace bounds how long a session that a reload or shutdown
// ends may take to receive the notice why: a client that reads nothing
// is closed without it when the grace is over.
const disconnectGrace = time.Second

// disconnect tells ps why it ends and closes it, off the caller's
// goroutine: the notice waits at most disconnectGrace for a client that
// does not read. Closing the session unblocks the notice's write.
func (s *Server) disconnect(ps *peerSession, why string) {
	closeLate := time.AfterFunc(disconnectGrace, func() { ps.sess.Close() })
	s.goRun(func() {
		_ = ps.sess.SendControl(&session.Msg{Type: session.TypeError, Error: why})
		closeLate.Stop()
		ps.sess.Close()
	})
}
