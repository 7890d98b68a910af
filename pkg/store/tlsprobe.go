package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"
)

// tlsProbe finds why TLS with etcd fails, when it does. gRPC keeps a
// failed handshake to itself and retries: a request against an etcd that
// refuses gtund's certificate (or whose certificate gtund refuses) ends in
// "deadline exceeded" like one against an etcd that is down. When a
// request times out, the probe connects to the endpoints itself and, if
// one accepts the TCP connection and then fails the TLS handshake, names
// that cause. It runs on the failure path only, at most once per
// probeEvery (a long outage must not cost a probe per request).
type tlsProbe struct {
	conf      *tls.Config // nil: etcd without TLS, nothing to probe
	endpoints []string

	mu    sync.Mutex
	at    time.Time
	cause error
}

const (
	probeEvery   = 10 * time.Second
	probeTimeout = time.Second
)

// Cause is the TLS failure of the first endpoint that has one, or nil
// (no TLS, endpoints that do not answer at all, or TLS that works).
func (p *tlsProbe) Cause() error {
	if p == nil || p.conf == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.at) < probeEvery {
		return p.cause
	}
	p.cause = nil
	for _, ep := range p.endpoints {
		if err := p.probe(ep); err != nil {
			p.cause = err
			break
		}
	}
	p.at = time.Now()
	return p.cause
}

// probe connects to endpoint ep (a URL) and reports a TLS failure: a
// handshake refused, or (TLS 1.3, where the server checks the client's
// certificate after the client is done) the alert the server sends
// instead of its first bytes. nil: no TCP connection, or TLS works.
func (p *tlsProbe) probe(ep string) error {
	host := ep
	if u, err := url.Parse(ep); err == nil && u.Host != "" {
		host = u.Host
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", host)
	if err != nil {
		return nil // not a TLS failure: the request's own error says it
	}
	defer raw.Close()
	conf := p.conf.Clone()
	if conf.ServerName == "" {
		conf.ServerName, _, _ = net.SplitHostPort(host)
	}
	c := tls.Client(raw, conf)
	if err := c.HandshakeContext(ctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil
		}
		return fmt.Errorf("TLS with %s: %w", ep, err)
	}
	// etcd speaks HTTP/2 and sends its settings first: a read returns
	// them, or the alert of a client certificate refused.
	c.SetReadDeadline(time.Now().Add(probeTimeout))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil && !errors.Is(err, io.EOF) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return fmt.Errorf("TLS with %s: %w", ep, err)
	}
	return nil
}
