package client

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/sdnotify"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/session"
	"github.com/gtun/gtun/pkg/splitdns"
	"github.com/gtun/gtun/pkg/transport"
)

// Reconnect backoff: starts small so a blip heals fast, capped low so a
// restarted gtund is back in use within a few seconds.
const (
	backoffMin = 200 * time.Millisecond
	backoffMax = 1500 * time.Millisecond
)

// upstream is gtun's side of one [[server]], a gtund: its entry in the
// config, its session, what the server pushed, and its counters across
// reconnects.
type upstream struct {
	name string // never changes: reloads match servers by name
	// stop ends the connect loop of a server a reload removed; done is
	// closed when it has returned. Set by startUpstream before it runs.
	stop context.CancelFunc
	done chan struct{}
	sess atomic.Pointer[session.Session]

	mu         sync.Mutex
	entry      config.ServerEntry // replaced by a reload
	state      string             // connecting, connected, reconnecting
	since      time.Time
	endpoint   string
	transport  string // of the running session
	mtu        int
	pushed     []netip.Prefix
	desired    []netip.Prefix
	conflicts  map[netip.Prefix]string // desired prefixes another server owns -> its name
	subnetList []netip.Prefix          // this client's networks as the server routes them here
	// tunnel holds the addresses the server pushed (zero before its first
	// config), which the data plane checks its packets against.
	tunnel atomic.Pointer[tunnelAddrs]
	dns    splitdns.Route // split DNS as pushed (not yet checked against the routes)
	// dnsApplied and dnsRefused are the pushed domains the DNS policy
	// took and refused, with why (for status).
	dnsApplied    []string
	dnsRefused    []RefusedDomain
	dnsSuffixNote string  // why dns_suffix renames nothing (status); "" when it does or is not set
	drops         drops   // of what the server sent, across sessions
	dropLog       dropLog // holds back log lines of those drops
	reconnects    uint64
	lastHandshake time.Time
	lastError     string
	// totals of sessions that ended, so counters survive reconnects
	closedRx, closedTx, closedRxPkts, closedTxPkts uint64
	closedRekeys                                   session.Rekeys
}

func newUpstream(e config.ServerEntry) *upstream {
	up := &upstream{name: e.Name, entry: e, state: "connecting", since: time.Now()}
	up.tunnel.Store(&tunnelAddrs{})
	return up
}

// connectLoop keeps one server connected. The TUN address and routes stay in
// place while it reconnects, so flows resume as soon as the session is back.
func (c *Client) connectLoop(ctx context.Context, up *upstream) {
	backoff := backoffMin
	var next *dialed // a session the failback prober set up, to switch to
	for ctx.Err() == nil {
		d := next
		next = nil
		if d == nil {
			var err error
			d, err = c.dial(ctx, up, c.plan(up.getEntry()))
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				up.mu.Lock()
				changed := up.lastError != err.Error()
				up.lastError = err.Error()
				up.mu.Unlock()
				level := slog.LevelDebug
				if changed {
					level = slog.LevelWarn
				}
				c.log.Log(ctx, level, "connect failed", "server", up.name, "err", err, "retry_in", backoff)
				// Jitter keeps many clients from reconnecting in lockstep after an outage.
				wait := backoff/2 + rand.N(backoff/2+1)
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return
				}
				backoff = min(backoff*2, backoffMax)
				continue
			}
		}
		backoff = backoffMin
		if err := c.applyConfig(up, d.cfg); err != nil {
			c.log.Error("cannot apply server config", "server", up.name, "err", err)
			d.sess.Close()
			up.mu.Lock()
			up.lastError = err.Error()
			up.mu.Unlock()
			select {
			case <-time.After(backoffMax):
			case <-ctx.Done():
			}
			continue
		}
		up.mu.Lock()
		if !up.lastHandshake.IsZero() {
			up.reconnects++
		}
		up.state, up.since, up.endpoint, up.transport, up.lastHandshake, up.lastError = "connected", time.Now(), d.at.endpoint, d.at.transport, time.Now(), ""
		up.mu.Unlock()
		up.sess.Store(d.sess)
		args := []any{"server", up.name, "endpoint", d.at.endpoint, "transport", d.at.transport, "address", d.cfg.Address}
		if d.cfg.Address6 != "" {
			args = append(args, "address6", d.cfg.Address6)
		}
		c.log.Info("connected", append(args, "routes", d.cfg.Routes)...)
		_ = sdnotify.Status(c.statusLine())

		// Not on the preferred endpoint and transport: keep trying those in
		// the background and move over when one answers.
		runCtx, stopRun := context.WithCancel(ctx)
		probed := make(chan *dialed, 1)
		entry := up.getEntry()
		if d.at.index > 0 && entry.Failback {
			go func() { probed <- c.failback(runCtx, up, c.plan(entry)[:d.at.index], stopRun) }()
		} else {
			probed <- nil
		}
		err := d.sess.Run(runCtx, session.Handlers{
			Packet:  func(pkt []byte) { c.fromServer(up, pkt) },
			Control: func(m *session.Msg) { c.onControl(up, m) },
		})
		stopRun()
		next = <-probed
		up.sess.Store(nil)
		up.addClosed(d.sess)
		d.sess.Close()
		if ctx.Err() != nil {
			if next != nil {
				next.sess.Close()
			}
			return
		}
		if next != nil {
			c.log.Info("moving to the preferred endpoint/transport", "server", up.name,
				"from", d.at.String(), "to", next.at.String())
			continue
		}
		c.log.Warn("session lost; reconnecting with routes kept", "server", up.name, "err", err)
		up.mu.Lock()
		up.state, up.since = "reconnecting", time.Now()
		if err != nil {
			up.lastError = err.Error()
		}
		up.mu.Unlock()
		_ = sdnotify.Status(c.statusLine())
	}
}

// attempt is one way to reach a server: an endpoint over a transport, at
// its place in the order of preference.
type attempt struct {
	index     int
	endpoint  string
	transport string
}

func (a attempt) String() string { return a.transport + "://" + a.endpoint }

// dialed is a session set up and its config, not yet running.
type dialed struct {
	sess *session.Session
	cfg  *session.Msg
	at   attempt
}

// plan lists the attempts in order of preference: endpoints in the order
// configured (or this client's spread order), and with transport auto udp
// before tcp on each.
func (c *Client) plan(e config.ServerEntry) []attempt {
	var out []attempt
	endpoints := e.Endpoints
	if e.EndpointOrder == config.EndpointsSpread {
		endpoints = SpreadOrder(c.cfg.PrivateKey.Public(), endpoints)
	}
	for _, ep := range endpoints {
		if e.Transport == transport.Auto {
			out = append(out, attempt{len(out), ep, transport.UDP}, attempt{len(out) + 1, ep, transport.TCP})
		} else {
			out = append(out, attempt{len(out), ep, e.Transport})
		}
	}
	return out
}

// failback tries the attempts preferred over the running one every
// FailbackInterval; when one answers it stops the running session (stop)
// and returns the new one. It returns nil when ctx ends first.
func (c *Client) failback(ctx context.Context, up *upstream, preferred []attempt, stop func()) *dialed {
	interval := up.getEntry().FailbackInterval
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
		d, err := c.dial(ctx, up, preferred)
		if err != nil {
			c.log.Debug("failback: preferred endpoint/transport still unavailable", "server", up.name, "err", err)
			continue
		}
		stop()
		return d
	}
}

// dial tries the attempts in order and returns the first session up.
func (c *Client) dial(ctx context.Context, up *upstream, plan []attempt) (*dialed, error) {
	var errs []error
	entry := up.getEntry()
	for _, at := range plan {
		sess, cfg, err := c.dialOne(ctx, entry, at)
		if err == nil {
			return &dialed{sess: sess, cfg: cfg, at: at}, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, fmt.Errorf("%s: %w", at, err))
	}
	return nil, errors.Join(errs...)
}

// kcpHandshakeTimeout bounds the wait for a server over UDP, which is
// silence, not an error, when UDP is blocked: auto then falls back to tcp
// within a few seconds.
const kcpHandshakeTimeout = 3 * time.Second

func (c *Client) dialOne(ctx context.Context, entry config.ServerEntry, at attempt) (*session.Session, *session.Msg, error) {
	hcfg := secure.ClientConfig{Private: c.cfg.PrivateKey, ServerKey: entry.PublicKey}
	var sconn *secure.Conn
	var dg *transport.Datagrams
	if at.transport == transport.KCP || at.transport == transport.UDP {
		// The handshake is the datagram layer's; kcp runs inside its
		// session (on udp, for the control messages alone).
		o := transport.Options{FECData: entry.FECData, FECParity: entry.FECParity}
		var kc *secure.Conn
		var err error
		if at.transport == transport.UDP {
			kc, dg, err = transport.DialUDP(ctx, at.endpoint, o, hcfg, kcpHandshakeTimeout)
		} else {
			kc, _, err = transport.DialKCP(ctx, at.endpoint, o, hcfg, kcpHandshakeTimeout)
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, nil, fmt.Errorf("no answer over %s (UDP blocked, %s not in the server's transports, or the server does not know this key): %w", at.transport, at.transport, err)
			}
			return nil, nil, err
		}
		sconn = kc
	} else {
		raw, err := c.dialTCP(ctx, at.endpoint)
		if err != nil {
			return nil, nil, err
		}
		// The handshake has its own deadline; a shutdown must not wait for it.
		stop := context.AfterFunc(ctx, func() { raw.Close() })
		sconn, err = secure.Client(raw, hcfg)
		stop()
		if err != nil {
			raw.Close()
			return nil, nil, err
		}
	}
	hostname, _ := os.Hostname()
	hello := &session.Msg{Type: session.TypeHello, Version: secure.ProtocolVersion, Name: hostname, Transport: at.transport}
	if at.transport == transport.KCP || at.transport == transport.UDP {
		hello.FECData, hello.FECParity = entry.FECData, entry.FECParity
	}
	sess, cfg, err := session.Dial(ctx, sconn, hello, 0, c.log)
	if err != nil {
		return nil, nil, err
	}
	if dg != nil {
		sess.UseDatagrams(dg)
	}
	if cfg.Version != secure.ProtocolVersion {
		sess.Close()
		return nil, nil, &secure.VersionError{Local: secure.ProtocolVersion, Remote: cfg.Version}
	}
	return sess, cfg, nil
}

func (up *upstream) getEntry() config.ServerEntry {
	up.mu.Lock()
	defer up.mu.Unlock()
	return up.entry
}

func (up *upstream) addClosed(s *session.Session) {
	up.mu.Lock()
	defer up.mu.Unlock()
	up.closedRx += s.Stats.RxBytes.Load()
	up.closedTx += s.Stats.TxBytes.Load()
	up.closedRxPkts += s.Stats.RxPackets.Load()
	up.closedRekeys = up.closedRekeys.Add(s.Rekeys())
	up.closedTxPkts += s.Stats.TxPackets.Load()
}

// SpreadOrder orders endpoints for the client with key by rendezvous
// hashing: each endpoint's weight is a hash of the key and the endpoint,
// highest first. Over many clients each endpoint comes first equally
// often; a client's order never changes while the list does not, and
// removing an endpoint moves only the clients that preferred it.
func SpreadOrder(key secure.PublicKey, endpoints []string) []string {
	type weighted struct {
		ep string
		w  uint64
	}
	ws := make([]weighted, len(endpoints))
	for i, ep := range endpoints {
		h := sha256.New()
		h.Write(key[:])
		h.Write([]byte(ep))
		ws[i] = weighted{ep, binary.BigEndian.Uint64(h.Sum(nil))}
	}
	slices.SortStableFunc(ws, func(a, b weighted) int { return cmp.Compare(b.w, a.w) })
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.ep
	}
	return out
}
