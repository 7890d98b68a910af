// Package store keeps gtund's shared state in etcd: the peers that
// `gtund peer add` makes and the tunnel address leases, for several gtund
// replicas of one gateway. The file backend (state_dir) needs none of
// this: it is pkg/peers' peers file and pkg/ipam's lease file.
//
// Layout under the configured prefix P:
//
//	P/peers/NAME         a [[peer]] as JSON
//	P/peers-rev          touched by every peer change: a change is a
//	                     transaction on the revision its checks read
//	P/leases/KEY         the lease of a public key (ipam.Lease as JSON)
//	P/addrs/ADDRESS      the public key holding an address (lease or fixed)
//	P/replicas/NAME      a running replica and its sessions, bound to an
//	                     etcd lease: gone when the replica is
//
// etcd.go is the client and the transactions, mirror.go how a running
// gtund follows the store (watch, cache, status).
package store

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gtun/gtun/pkg/config"
	"github.com/gtun/gtun/pkg/ipam"
	"github.com/gtun/gtun/pkg/secure"
)

// Etcd is a connection to the etcd cluster of a gateway's replicas.
type Etcd struct {
	cli       *clientv3.Client
	prefix    string
	timeout   time.Duration
	endpoints []string
	tls       *tlsProbe // why TLS fails, for a request that times out
}

// UnavailableError is etcd not answering in time: the message names the
// endpoints and the timeout, the cause is kept, and so is the TLS failure
// behind it when a probe of the endpoints finds one.
type UnavailableError struct {
	Endpoints []string
	Timeout   time.Duration
	Err       error
	TLS       error // nil: no TLS failure found
}

func (e *UnavailableError) Error() string {
	msg := fmt.Sprintf("etcd at %s did not answer within %s: %v", strings.Join(e.Endpoints, ", "), e.Timeout, e.Err)
	if e.TLS != nil {
		msg += " (" + e.TLS.Error() + ")"
	}
	return msg
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// ConflictError is a change the store refuses as asked (a name or key
// already there, an address someone holds): the caller's to fix.
type ConflictError struct{ Msg string }

func (e *ConflictError) Error() string { return e.Msg }

// Dial makes a client for st; it does not wait for etcd (requests do, up
// to the dial timeout), so a gtund starts while etcd is away.
func Dial(st config.Store) (*Etcd, error) {
	cfg := clientv3.Config{Endpoints: st.Endpoints, DialTimeout: st.DialTimeout, Logger: zap.NewNop(),
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 2 * time.Second,
		// gRPC's reconnect backoff grows to 2 minutes by default: after a
		// long outage a replica would find etcd back that late. Retry
		// every 2 s at most.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: st.DialTimeout})}}
	if st.CAFile != "" || st.CertFile != "" {
		info := transport.TLSInfo{CertFile: st.CertFile, KeyFile: st.KeyFile, TrustedCAFile: st.CAFile}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		tc.MinVersion = tls.VersionTLS12
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(st.Endpoints, ", "), err)
	}
	return &Etcd{cli: cli, prefix: st.Prefix, timeout: st.DialTimeout, endpoints: st.Endpoints,
		tls: &tlsProbe{conf: cfg.TLS, endpoints: st.Endpoints}}, nil
}

// Close ends the client.
func (e *Etcd) Close() error { return e.cli.Close() }

// Endpoints are the etcd URLs this client uses.
func (e *Etcd) Endpoints() []string { return e.endpoints }

// Prefix is the key prefix of this gateway.
func (e *Etcd) Prefix() string { return e.prefix }

func (e *Etcd) peerKey(name string) string    { return e.prefix + "/peers/" + name }
func (e *Etcd) peersRevKey() string           { return e.prefix + "/peers-rev" }
func (e *Etcd) leaseKey(k string) string      { return e.prefix + "/leases/" + k }
func (e *Etcd) addrKey(a string) string       { return e.prefix + "/addrs/" + a }
func (e *Etcd) replicaKey(name string) string { return e.prefix + "/replicas/" + name }
func (e *Etcd) under(what string) string      { return e.prefix + "/" + what + "/" }
func (e *Etcd) request() (context.Context, func()) {
	return context.WithTimeout(context.Background(), e.timeout)
}
func (e *Etcd) requestCtx(ctx context.Context) (context.Context, func()) {
	return context.WithTimeout(ctx, e.timeout)
}

// unavailable is the error of a request etcd did not answer in time.
func (e *Etcd) unavailable(err error) *UnavailableError {
	return &UnavailableError{Endpoints: e.endpoints, Timeout: e.timeout, Err: err, TLS: e.tls.Cause()}
}

// wrap makes a failed request an UnavailableError when etcd did not
// answer (as opposed to refusing the request).
func (e *Etcd) wrap(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "Unavailable") ||
		strings.Contains(err.Error(), "DeadlineExceeded") || strings.Contains(err.Error(), "connection refused") {
		return e.unavailable(err)
	}
	return fmt.Errorf("etcd: %w", err)
}

// transient is an error of an election in progress, or of a member that
// is gone (the client's connection to it failed; it moves to another): the
// request may be tried again. Every write here is safe to repeat: a
// change is guarded by compares, and a repeat that finds its own earlier
// success says so (errDone).
func transient(err error) bool {
	if err == nil {
		return false
	}
	for _, e := range []error{rpctypes.ErrLeaderChanged, rpctypes.ErrNoLeader, rpctypes.ErrTimeout,
		rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost} {
		if errors.Is(err, e) || strings.Contains(err.Error(), rpctypes.ErrorDesc(e)) {
			return true
		}
	}
	// A member whose proposal timed out while the leader was lost answers
	// "context deadline exceeded" with code Unknown (our own deadline
	// comes as DeadlineExceeded).
	return status.Code(err) == codes.Unavailable ||
		(status.Code(err) == codes.Unknown && strings.Contains(err.Error(), "deadline exceeded"))
}

// errDone is a plan's answer when the change is there already: an earlier
// try committed although its answer was lost.
var errDone = errors.New("already done")

// Snapshot is the store's state at one revision.
type Snapshot struct {
	Peers    []config.PeerSection // sorted by name
	Leases   []ipam.Lease
	Revision int64
}

// Load reads peers and leases at one revision.
func (e *Etcd) Load(ctx context.Context) (Snapshot, error) {
	ctx, cancel := e.requestCtx(ctx)
	defer cancel()
	resp, err := e.cli.Txn(ctx).Then(
		clientv3.OpGet(e.under("peers"), clientv3.WithPrefix()),
		clientv3.OpGet(e.under("leases"), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return Snapshot{}, e.wrap(err)
	}
	snap := Snapshot{Revision: resp.Header.Revision}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		var p config.PeerSection
		if err := json.Unmarshal(kv.Value, &p); err != nil {
			return Snapshot{}, fmt.Errorf("etcd key %s: %w", kv.Key, err)
		}
		snap.Peers = append(snap.Peers, p)
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var l ipam.Lease
		if err := json.Unmarshal(kv.Value, &l); err != nil {
			return Snapshot{}, fmt.Errorf("etcd key %s: %w", kv.Key, err)
		}
		snap.Leases = append(snap.Leases, l)
	}
	slices.SortFunc(snap.Peers, func(a, b config.PeerSection) int { return strings.Compare(a.Name, b.Name) })
	return snap, nil
}

// AddPeer stores p after check accepted the peers with p among them (as
// gtund would load them). The check and the write are one transaction on
// the peers' revision: two adds at once on two replicas are serialized,
// the second re-checked against the first, so neither's peer is lost and
// no name, key or address is taken twice.
func (e *Etcd) AddPeer(p config.PeerSection, check func([]config.PeerSection) error) error {
	return e.changePeers(func(list []config.PeerSection, addrs map[string]string) ([]clientv3.Cmp, []clientv3.Op, error) {
		for _, o := range list {
			if o.Name == p.Name && o.PublicKey == p.PublicKey {
				return nil, nil, fmt.Errorf("peer %q already exists (in etcd) with this key: %w", p.Name, errDone)
			}
			if o.Name == p.Name {
				return nil, nil, &ConflictError{fmt.Sprintf("peer %q already exists (in etcd)", p.Name)}
			}
			if o.PublicKey == p.PublicKey {
				return nil, nil, &ConflictError{fmt.Sprintf("that public key is already peer %q's (in etcd)", o.Name)}
			}
		}
		if err := check(append(slices.Clone(list), p)); err != nil {
			return nil, nil, err
		}
		v, _ := json.Marshal(p)
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(e.peerKey(p.Name)), "=", 0)}
		ops := []clientv3.Op{clientv3.OpPut(e.peerKey(p.Name), string(v))}
		if p.Address != "" {
			// A fixed address is held like a lease, so that no replica
			// leases it to another key meanwhile.
			if owner, ok := addrs[p.Address]; ok && owner != p.PublicKey {
				return nil, nil, &ConflictError{fmt.Sprintf("address %s is leased to another key (%s…)", p.Address, owner[:8])}
			}
			l, _ := json.Marshal(ipam.Lease{PublicKey: p.PublicKey, Name: p.Name, Address: p.Address, Updated: time.Now().UTC()})
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(e.leaseKey(p.PublicKey)), "=", 0))
			if _, ok := addrs[p.Address]; !ok {
				cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(e.addrKey(p.Address)), "=", 0))
			}
			ops = append(ops, clientv3.OpPut(e.addrKey(p.Address), p.PublicKey), clientv3.OpPut(e.leaseKey(p.PublicKey), string(l)))
		}
		return cmps, ops, nil
	})
}

// RemovePeer deletes the peer called name and releases its address.
func (e *Etcd) RemovePeer(name string) (config.PeerSection, error) {
	var removed config.PeerSection
	err := e.changePeers(func(list []config.PeerSection, _ map[string]string) ([]clientv3.Cmp, []clientv3.Op, error) {
		i := slices.IndexFunc(list, func(p config.PeerSection) bool { return p.Name == name })
		if i < 0 && removed.Name == name {
			return nil, nil, errDone // an earlier try removed it
		}
		if i < 0 {
			return nil, nil, &ConflictError{fmt.Sprintf("no peer %q in etcd", name)}
		}
		removed = list[i]
		ops := []clientv3.Op{clientv3.OpDelete(e.peerKey(name)), clientv3.OpDelete(e.leaseKey(removed.PublicKey))}
		ctx, cancel := e.request()
		defer cancel()
		resp, err := e.cli.Get(ctx, e.leaseKey(removed.PublicKey))
		if err != nil {
			return nil, nil, e.wrap(err)
		}
		var cmps []clientv3.Cmp
		if len(resp.Kvs) == 1 {
			var l ipam.Lease
			if json.Unmarshal(resp.Kvs[0].Value, &l) == nil {
				cmps = append(cmps, clientv3.Compare(clientv3.Value(e.addrKey(l.Address)), "=", removed.PublicKey))
				ops = append(ops, clientv3.OpDelete(e.addrKey(l.Address)))
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(e.leaseKey(removed.PublicKey)), "=", resp.Kvs[0].ModRevision))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(e.leaseKey(removed.PublicKey)), "=", 0))
		}
		return cmps, ops, nil
	})
	return removed, err
}

// changePeers runs one peer change: read the peers (and the held
// addresses) at a revision, let plan decide, commit if no peer changed
// since; otherwise read again and re-plan.
func (e *Etcd) changePeers(plan func(list []config.PeerSection, addrs map[string]string) ([]clientv3.Cmp, []clientv3.Op, error)) error {
	// Changes at once are serialized by their transactions: a loser reads
	// again and retries after a random pause (so that many at once do not
	// keep colliding), for as long as a few dial timeouts.
	start := time.Now()
	deadline := start.Add(4 * e.timeout)
	var lastErr error // of a try that may have committed
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		ctx, cancel := e.request()
		resp, err := e.cli.Txn(ctx).Then(
			clientv3.OpGet(e.under("peers"), clientv3.WithPrefix()),
			clientv3.OpGet(e.under("addrs"), clientv3.WithPrefix()),
			clientv3.OpGet(e.peersRevKey()),
		).Commit()
		cancel()
		if transient(err) {
			if lastErr = err; time.Since(start) > e.timeout {
				return e.unavailable(err)
			}
			time.Sleep(100 * time.Millisecond) // another member answers
			continue
		}
		if err != nil {
			return e.wrap(err)
		}
		var list []config.PeerSection
		for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
			var p config.PeerSection
			if err := json.Unmarshal(kv.Value, &p); err != nil {
				return fmt.Errorf("etcd key %s: %w", kv.Key, err)
			}
			list = append(list, p)
		}
		addrs := map[string]string{}
		for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
			addrs[strings.TrimPrefix(string(kv.Key), e.under("addrs"))] = string(kv.Value)
		}
		var seen int64
		if kvs := resp.Responses[2].GetResponseRange().Kvs; len(kvs) == 1 {
			seen = kvs[0].ModRevision
		}
		cmps, ops, err := plan(list, addrs)
		if errors.Is(err, errDone) {
			if lastErr != nil || attempt > 0 {
				return nil
			}
			return &ConflictError{strings.TrimSuffix(err.Error(), ": "+errDone.Error())}
		}
		if err != nil {
			return err
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(e.peersRevKey()), "=", seen))
		ops = append(ops, clientv3.OpPut(e.peersRevKey(), time.Now().UTC().Format(time.RFC3339Nano)))
		ctx, cancel = e.request()
		tr, err := e.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		cancel()
		if transient(err) {
			if lastErr = err; time.Since(start) > e.timeout {
				return e.unavailable(err)
			}
			time.Sleep(100 * time.Millisecond) // an election: the next leader answers
			continue
		}
		if err != nil {
			return e.wrap(err)
		}
		if tr.Succeeded {
			return nil
		}
		time.Sleep(time.Duration(1+rand.IntN(10*min(attempt+1, 10))) * time.Millisecond) // another change won: read it and try again
	}
	return errors.New("etcd: the peers kept changing under this change; try again")
}

// Claim implements ipam.Claimer: one transaction gives a to key if
// neither a nor key is held yet; otherwise it reads who holds them.
func (e *Etcd) Claim(key secure.PublicKey, name string, a netip.Addr) (netip.Addr, error) {
	k, as := key.String(), a.String()
	l, _ := json.Marshal(ipam.Lease{PublicKey: k, Name: name, Address: as, Updated: time.Now().UTC()})
	ctx, cancel := e.request()
	defer cancel()
	var resp *clientv3.TxnResponse
	var err error
	for try := 0; try < 10; try++ {
		resp, err = e.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(e.leaseKey(k)), "=", 0), clientv3.Compare(clientv3.CreateRevision(e.addrKey(as)), "=", 0)).
			Then(clientv3.OpPut(e.leaseKey(k), string(l)), clientv3.OpPut(e.addrKey(as), k)).
			Else(clientv3.OpGet(e.leaseKey(k)), clientv3.OpGet(e.addrKey(as))).
			Commit()
		if !transient(err) {
			break
		}
		time.Sleep(100 * time.Millisecond) // an election: the next leader answers
	}
	if err != nil {
		return netip.Addr{}, e.wrap(err)
	}
	if resp.Succeeded {
		return a, nil
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		var mine ipam.Lease
		if err := json.Unmarshal(kvs[0].Value, &mine); err != nil {
			return netip.Addr{}, fmt.Errorf("etcd key %s: %w", kvs[0].Key, err)
		}
		return netip.ParseAddr(mine.Address)
	}
	kvs := resp.Responses[1].GetResponseRange().Kvs
	if len(kvs) != 1 {
		return netip.Addr{}, errors.New("etcd: claim refused but neither key nor address is held (changed meanwhile); try again")
	}
	owner := ipam.Lease{PublicKey: string(kvs[0].Value), Address: as, Name: "?"}
	ctx2, cancel2 := e.request()
	defer cancel2()
	if r, err := e.cli.Get(ctx2, e.leaseKey(owner.PublicKey)); err == nil && len(r.Kvs) == 1 {
		_ = json.Unmarshal(r.Kvs[0].Value, &owner)
	}
	return netip.Addr{}, &ipam.TakenError{Owner: owner}
}

// importBatch bounds the operations of one transaction: etcd refuses more
// than --max-txn-ops (default 128).
const importBatch = 100

// Import writes peers and leases of a file store into etcd. It first
// checks that no name, key or address is there yet (then it writes
// nothing), then writes in transactions of up to importBatch operations,
// each guarded by the same checks for its keys.
func (e *Etcd) Import(peers []config.PeerSection, leases []ipam.Lease) error {
	leased := map[string]bool{}
	for _, l := range leases {
		leased[l.PublicKey] = true
	}
	for _, p := range peers {
		if p.Address != "" && !leased[p.PublicKey] { // fixed addresses are held like leases
			leases = append(leases, ipam.Lease{PublicKey: p.PublicKey, Name: p.Name, Address: p.Address, Updated: time.Now().UTC()})
		}
	}
	type put struct{ key, value string }
	var puts []put
	for _, p := range peers {
		v, _ := json.Marshal(p)
		puts = append(puts, put{e.peerKey(p.Name), string(v)})
	}
	for _, l := range leases {
		v, _ := json.Marshal(l)
		puts = append(puts, put{e.leaseKey(l.PublicKey), string(v)}, put{e.addrKey(l.Address), l.PublicKey})
	}
	ctx, cancel := e.request()
	defer cancel()
	resp, err := e.cli.Txn(ctx).Then(
		clientv3.OpGet(e.under("peers"), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(e.under("leases"), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(e.under("addrs"), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return e.wrap(err)
	}
	there := map[string]bool{}
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			there[string(kv.Key)] = true
		}
	}
	var clash []string
	for _, p := range puts {
		if there[p.key] {
			clash = append(clash, strings.TrimPrefix(p.key, e.prefix+"/"))
		}
	}
	if len(clash) > 0 {
		if len(clash) > 5 {
			clash = append(clash[:5], fmt.Sprintf("and %d more", len(clash)-5))
		}
		return &ConflictError{"etcd already holds under " + e.prefix + ": " + strings.Join(clash, ", ") + "; nothing imported (gtund store export shows what is there)"}
	}
	for i := 0; i < len(puts); i += importBatch {
		batch := puts[i:min(i+importBatch, len(puts))]
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, p := range batch {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(p.key), "=", 0))
			ops = append(ops, clientv3.OpPut(p.key, p.value))
		}
		ops = append(ops, clientv3.OpPut(e.peersRevKey(), time.Now().UTC().Format(time.RFC3339Nano)))
		ctx, cancel := e.request()
		resp, err := e.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("imported %d of %d keys, then: %w", i, len(puts), e.wrap(err))
		}
		if !resp.Succeeded {
			return &ConflictError{fmt.Sprintf("imported %d of %d keys, then one of the next was written meanwhile by someone else under %s: check with gtund store export", i, len(puts), e.prefix)}
		}
	}
	return nil
}

// Replica is what a running replica publishes about itself.
type Replica struct {
	Name     string           `json:"name"`
	Listen   []string         `json:"listen"`
	Since    time.Time        `json:"since"`
	Sessions []ReplicaSession `json:"sessions"` // at most MaxPublishedSessions
	// SessionsTotal counts the replica's sessions, listed or not.
	SessionsTotal int `json:"sessions_total"`
	// Served is a digest of what the replica serves (pool, routes, map,
	// dns, nat, mtu...) from its own gtund.toml: replicas that show
	// different digests have drifted apart.
	Served string `json:"served"`
}

// MaxPublishedSessions bounds the sessions a replica lists in its record:
// etcd refuses a value over 1.5 MiB (--max-request-bytes), about 13,000
// sessions' worth.
const MaxPublishedSessions = 8000

// ReplicaSession is a peer connected to a replica.
type ReplicaSession struct {
	Peer     string    `json:"peer"`
	Address  string    `json:"address"`
	Endpoint string    `json:"endpoint"`
	Since    time.Time `json:"since"`
}

// Replicas lists the replicas running now (those whose etcd lease lives).
func (e *Etcd) Replicas() ([]Replica, error) {
	ctx, cancel := e.request()
	defer cancel()
	resp, err := e.cli.Get(ctx, e.under("replicas"), clientv3.WithPrefix())
	if err != nil {
		return nil, e.wrap(err)
	}
	var out []Replica
	for _, kv := range resp.Kvs {
		var r Replica
		if json.Unmarshal(kv.Value, &r) == nil {
			out = append(out, r)
		}
	}
	return out, nil
}
