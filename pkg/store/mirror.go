package store

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gtun/gtun/pkg/atomicfile"
	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/ipam"
	"github.com/gtun/gtun/pkg/pause"
)

// Status is the store as `gtund status` shows it.
type Status struct {
	Backend   string    `json:"backend"`
	Endpoints []string  `json:"endpoints,omitempty"`
	Prefix    string    `json:"prefix,omitempty"`
	Replica   string    `json:"replica,omitempty"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since,omitzero"` // connected since, or away since
	Revision  int64     `json:"revision,omitempty"`
	Errors    uint64    `json:"errors"`
	LastError string    `json:"last_error,omitempty"`
	CacheDir  string    `json:"cache_dir"`
}

// healthInterval is how often the mirror checks that etcd answers; an
// outage shows in status and metrics within it (plus the dial timeout).
const healthInterval = time.Second

// PeersCacheHeader heads the cache of etcd's peers in state_dir.
const PeersCacheHeader = `# gtund's copy of the peers in etcd, written by gtund whenever they change
# there, read at start and on reloads (so a gtund started while etcd is
# away serves the peers it knew). Do not edit: use gtund peer add/remove.
`

// Mirror keeps a running gtund in step with etcd: it loads the store,
// watches it, writes the peers to the cache peers file and hands peers
// and leases to the server. etcd being away changes nothing but status:
// the server keeps what it has.
type Mirror struct {
	e       *Etcd
	dir     string // the cache: peers.toml here, leases.json by ipam.Pool
	replica string
	log     *slog.Logger
	onPeers func() // the cache peers file changed: reload
	leases  LeaseSink

	mu        sync.Mutex
	connected bool
	since     time.Time
	revision  int64
	errors    uint64
	lastErr   string
	peers     map[string]config.PeerSection
	known     map[string]ipam.Lease // the store's leases by public key, as last loaded or watched
	publish   func() Replica        // what this replica publishes; nil: nothing
	published []byte
}

// LeaseSink takes the store's leases: all of them after a load, the
// changes as the watch reports them (ipam.Pool).
type LeaseSink interface {
	Replace(all []ipam.Lease)
	Apply(put []ipam.Lease, released []string)
}

// NewMirror follows e for a server whose cache is dir.
func NewMirror(e *Etcd, dir, replica string, log *slog.Logger, onPeers func(), leases LeaseSink) *Mirror {
	return &Mirror{e: e, dir: dir, replica: replica, log: log, onPeers: onPeers, leases: leases, since: time.Now()}
}

// SetPublish sets what the replica publishes under P/replicas/NAME.
func (m *Mirror) SetPublish(f func() Replica) {
	m.mu.Lock()
	m.publish = f
	m.mu.Unlock()
}

// Status is the store's state now.
func (m *Mirror) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Status{Backend: config.StoreEtcd, Endpoints: m.e.endpoints, Prefix: m.e.prefix, Replica: m.replica,
		Connected: m.connected, Since: m.since, Revision: m.revision, Errors: m.errors, LastError: m.lastErr, CacheDir: m.dir}
}

func (m *Mirror) up(rev int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.connected {
		m.log.Info("store: etcd connected", "endpoints", m.e.endpoints, "revision", rev)
		m.connected, m.since = true, time.Now()
	}
	if rev > m.revision {
		m.revision = rev
	}
}

func (m *Mirror) down(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.errors++
	m.lastErr = err.Error()
	if m.connected || m.revision == 0 && m.errors == 1 {
		m.log.Warn("store: etcd unreachable; serving the peers and leases known, new keys get no address until it is back", "err", err)
		m.connected, m.since = false, time.Now()
	}
}

// Prime loads etcd once (within the store's request timeout) and applies
// what it holds, as Run's first load does: gtund calls it before it
// serves, so that a replica started with an empty or stale cache does not
// refuse known peers for the moment until Run's first load (and hold each
// refused handshake to its deadline, as it does for strangers). When etcd
// does not answer, the cache serves and Run keeps trying.
func (m *Mirror) Prime(ctx context.Context) error {
	snap, err := m.e.Load(ctx)
	if err != nil {
		m.down(err)
		return err
	}
	m.apply(snap)
	m.up(snap.Revision)
	return nil
}

// Run follows etcd until ctx ends: load everything, then watch from that
// revision; when etcd stops answering (the health check or the watch
// fails), wait and load again. A load after an outage brings in whatever
// changed meanwhile.
func (m *Mirror) Run(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		snap, err := m.e.Load(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.down(err)
			if !pause.For(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		backoff = 200 * time.Millisecond
		m.apply(snap)
		m.up(snap.Revision)
		m.forgetPublished() // a new etcd lease: the record is written again at the first tick
		if err := m.follow(ctx, snap.Revision+1); err != nil && ctx.Err() == nil {
			m.down(err)
		}
	}
}

// follow watches the store from rev until etcd fails or ctx ends.
func (m *Mirror) follow(ctx context.Context, rev int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := m.e.cli.Watch(clientv3.WithRequireLeader(ctx), m.e.prefix+"/", clientv3.WithPrefix(), clientv3.WithRev(rev))
	tick := time.NewTicker(healthInterval)
	defer tick.Stop()
	var lease clientv3.LeaseID
	defer func() {
		if lease != 0 { // this replica's key goes with it
			c, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = m.e.cli.Revoke(c, lease)
			cancel()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case wr, ok := <-wch:
			if !ok {
				return errors.New("etcd watch closed")
			}
			if err := wr.Err(); err != nil {
				return err
			}
			m.applyEvents(wr.Events)
			m.up(wr.Header.Revision)
		case <-tick.C:
			c, cancel := m.e.requestCtx(ctx)
			resp, err := m.e.cli.Get(c, m.e.peersRevKey(), clientv3.WithCountOnly())
			cancel()
			if err != nil {
				return m.e.wrap(err)
			}
			m.up(resp.Header.Revision)
			var err2 error
			if lease, err2 = m.keepPublished(ctx, lease); err2 != nil {
				m.log.Debug("store: publishing this replica's sessions", "err", err2)
			}
		}
	}
}

// forgetPublished makes the next tick write the replica's record even if
// it did not change.
func (m *Mirror) forgetPublished() {
	m.mu.Lock()
	m.published = nil
	m.mu.Unlock()
}

// keepPublished writes this replica's record when it changed, bound to an
// etcd lease of 10 s kept alive here: a replica that dies vanishes from
// `gtund peer list` within that.
func (m *Mirror) keepPublished(ctx context.Context, lease clientv3.LeaseID) (clientv3.LeaseID, error) {
	m.mu.Lock()
	publish := m.publish
	m.mu.Unlock()
	if publish == nil {
		return lease, nil
	}
	c, cancel := m.e.requestCtx(ctx)
	defer cancel()
	if lease != 0 {
		if _, err := m.e.cli.KeepAliveOnce(c, lease); err != nil {
			lease = 0
			m.mu.Lock()
			m.published = nil
			m.mu.Unlock()
		}
	}
	if lease == 0 {
		g, err := m.e.cli.Grant(c, 10)
		if err != nil {
			return 0, err
		}
		lease = g.ID
	}
	v, _ := json.Marshal(publish())
	m.mu.Lock()
	same := slices.Equal(v, m.published)
	m.mu.Unlock()
	if same {
		return lease, nil
	}
	if _, err := m.e.cli.Put(c, m.e.replicaKey(m.replica), string(v), clientv3.WithLease(lease)); err != nil {
		return lease, err
	}
	m.mu.Lock()
	m.published = v
	m.mu.Unlock()
	return lease, nil
}

// apply takes a whole snapshot.
func (m *Mirror) apply(snap Snapshot) {
	peers := map[string]config.PeerSection{}
	for _, p := range snap.Peers {
		peers[p.Name] = p
	}
	leases := map[string]ipam.Lease{}
	for _, l := range snap.Leases {
		leases[l.PublicKey] = l
	}
	m.mu.Lock()
	peersChanged := m.peers == nil || !equalPeers(m.peers, peers)
	leasesChanged := m.known == nil || !equalLeases(m.known, leases)
	m.peers, m.known = peers, leases
	m.mu.Unlock()
	if peersChanged {
		m.peersChanged()
	}
	if leasesChanged {
		m.leases.Replace(snap.Leases)
	}
}

func (m *Mirror) applyEvents(evs []*clientv3.Event) {
	var peersChanged bool
	var put []ipam.Lease
	var released []string
	m.mu.Lock()
	for _, ev := range evs {
		k := string(ev.Kv.Key)
		switch {
		case strings.HasPrefix(k, m.e.under("peers")):
			name := strings.TrimPrefix(k, m.e.under("peers"))
			if ev.Type == clientv3.EventTypeDelete {
				delete(m.peers, name)
			} else {
				var p config.PeerSection
				if err := json.Unmarshal(ev.Kv.Value, &p); err != nil {
					m.log.Error("store: bad peer in etcd; ignored", "key", k, "err", err)
					continue
				}
				m.peers[name] = p
			}
			peersChanged = true
		case strings.HasPrefix(k, m.e.under("leases")):
			key := strings.TrimPrefix(k, m.e.under("leases"))
			if ev.Type == clientv3.EventTypeDelete {
				delete(m.known, key)
				released = append(released, key)
			} else {
				var l ipam.Lease
				if err := json.Unmarshal(ev.Kv.Value, &l); err != nil {
					m.log.Error("store: bad lease in etcd; ignored", "key", k, "err", err)
					continue
				}
				m.known[key] = l
				put = append(put, l)
			}
		}
	}
	m.mu.Unlock()
	if peersChanged {
		m.peersChanged()
	}
	if len(put) > 0 || len(released) > 0 {
		m.leases.Apply(put, released)
	}
}

// peersChanged writes the cache peers file and tells the server.
func (m *Mirror) peersChanged() {
	m.mu.Lock()
	list := make([]config.PeerSection, 0, len(m.peers))
	for _, p := range m.peers {
		list = append(list, p)
	}
	m.mu.Unlock()
	slices.SortFunc(list, func(a, b config.PeerSection) int { return strings.Compare(a.Name, b.Name) })
	if err := WritePeersCache(m.dir, list); err != nil {
		m.log.Error("store: cannot write the peers cache; the peers apply at the next change", "err", err)
		return
	}
	m.onPeers()
}

// WritePeersCache writes list as the cache peers file in dir.
func WritePeersCache(dir string, list []config.PeerSection) error {
	src, err := config.EncodePeers(PeersCacheHeader, list)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	path := filepath.Join(dir, config.PeersFileName)
	if old, err := os.ReadFile(path); err == nil && string(old) == string(src) {
		return nil
	}
	return atomicfile.Write(path, src)
}

func equalPeers(a, b map[string]config.PeerSection) bool {
	if len(a) != len(b) {
		return false
	}
	for k, p := range a {
		q, ok := b[k]
		if !ok || p.Name != q.Name || p.PublicKey != q.PublicKey || p.Address != q.Address ||
			!slices.Equal(p.Allowed, q.Allowed) || !slices.Equal(p.Subnets, q.Subnets) {
			return false
		}
	}
	return true
}

func equalLeases(a, b map[string]ipam.Lease) bool {
	if len(a) != len(b) {
		return false
	}
	for k, l := range a {
		if o, ok := b[k]; !ok || o.Address != l.Address || o.Name != l.Name {
			return false
		}
	}
	return true
}
