package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gtun/gtun/pkg/dgram"
	"github.com/gtun/gtun/pkg/guard"
	"github.com/gtun/gtun/pkg/metrics"
	"github.com/gtun/gtun/pkg/secure"
)

// dropReasons are the names of gtund's drop reasons, reported from the
// start at 0; peerDropReasons those a peer's packets can have (all but
// no_route, which has no peer).
var dropReasons, peerDropReasons = func() (all, peer []string) {
	for r := range numDropReasons {
		all = append(all, r.String())
		if r != DropNoRoute {
			peer = append(peer, r.String())
		}
	}
	return all, peer
}()

// handshakeReasons are the reasons a connection is refused before it
// becomes a session.
var handshakeReasons = []string{"unknown_peer", "replay", "version", "malformed", "bad_mac1", "duplicate", "timeout", "io",
	guard.RateLimited, guard.TooManyPending, guard.TooManyPendingSource, guard.Evicted, "session_setup", "fec_mismatch"}

// Collector exposes gtund's state as Prometheus metrics (gtund_*). It reads
// a status snapshot at scrape time, so the packet path does nothing for it.
// Peer labels come from the config, so their number is bounded.
type Collector struct {
	status func() Status

	peerRxBytes, peerTxBytes, peerRxPackets, peerTxPackets         *prometheus.Desc
	peerConnected, peerRTT, peerSessions, peerDrops                *prometheus.Desc
	peers, sessions, routes, drops, handshakeFailures              *prometheus.Desc
	leasesFailing, offload, handshakesPending, hsSources           *prometheus.Desc
	heals, fights, handshakeDH, handshakeDHStrangers, knownSources *prometheus.Desc
	peerRekeys, peerKeyAge                                         *prometheus.Desc
	dgramDropped, dgramCookies, dgramSessions, dgramLoad           *prometheus.Desc
	dnsQueries, dnsRewritten                                       *prometheus.Desc
	storeConnected, storeRevision, storeErrors                     *prometheus.Desc
}

// dnsOutcomes are the outcomes of a query to gtund's DNS proxy.
var dnsOutcomes = []string{"answered", "failed", "refused", "busy"}

// healKinds are what gtund puts back when someone undoes it.
var healKinds = []string{HealNFTables, HealIPForward, HealLeases, HealTun, HealRoute}

// NewCollector builds the collector over a status source (Server.Status).
func NewCollector(status func() Status) *Collector {
	peerLabel := []string{"peer"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("gtund_"+name, help, labels, nil)
	}
	return &Collector{status: status,
		peerRxBytes:   d("peer_rx_bytes_total", "Bytes of data frames received from the peer (IP packets plus a 10-byte offload header each), across its sessions.", peerLabel...),
		peerTxBytes:   d("peer_tx_bytes_total", "Bytes of data frames sent to the peer (IP packets plus a 10-byte offload header each), across its sessions.", peerLabel...),
		peerRxPackets: d("peer_rx_packets_total", "Frames received from the peer (an offloaded super-packet counts once).", peerLabel...),
		peerTxPackets: d("peer_tx_packets_total", "Frames sent to the peer (an offloaded super-packet counts once).", peerLabel...),
		peerConnected: d("peer_connected", "1 while the peer has a session, else 0.", peerLabel...),
		peerRTT:       d("peer_rtt_seconds", "Last keepalive round trip of the peer's session, as the client measured it (0 before the first).", peerLabel...),
		peerSessions:  d("peer_sessions_total", "Sessions the peer established since gtund started; more than one means it reconnected.", peerLabel...),
		peerDrops:     d("peer_drops_total", "Packets from or to the peer that gtund dropped, by reason (acl, spoofed_source, queue_full, ...).", "peer", "reason"),
		peerRekeys: d("peer_rekeys_total", "Key updates of the peer's sessions, across them: direction=sent (gtund replaced its send key), direction=received (the client replaced its own).",
			"peer", "direction"),
		peerKeyAge: d("peer_key_age_seconds", "How long gtund's current send key of the peer's session has been in use (connected peers only); above rekey_interval plus a keepalive, keys are not rotating.", peerLabel...),
		peers:      d("peers", "Peers configured (gtund.toml and the peers file)."),
		sessions:   d("sessions", "Peers connected now."),
		routes:     d("routes", "Routes gtund serves (pushed to its clients)."),
		drops:      d("drops_total", "All packets gtund dropped, by reason, including those counted per peer in gtund_peer_drops_total.", "reason"),
		handshakeFailures: d("handshake_failures_total",
			"Connections refused before they became a session, by reason (unknown_peer, replay, timeout, rate_limited, ...).", "reason"),
		handshakesPending: d("handshakes_in_progress", "Connections accepted and not yet past the handshake and hello (capped by max_handshakes)."),
		handshakeDH: d("handshake_dh_total",
			"First handshake messages that cost Curve25519 work, by outcome (authenticated, version from known keys; unknown_peer, replay, malformed from strangers).", "outcome"),
		handshakeDHStrangers: d("handshake_dh_strangers_total",
			"First handshake messages from strangers that cost Curve25519 work: they passed mac1 (the sender knows the server's public key) and the replay filter, then did not authenticate a known key."),
		knownSources: d("handshake_known_sources",
			"Sources (IPv4 address, IPv6 /64) a known key completed a handshake from within known_source_ttl: they may use the max_handshakes_known reserve."),
		hsSources:     d("handshake_sources", "Source addresses the handshake guard remembers (recently active, for per-source limits)."),
		leasesFailing: d("leases_persist_failing", "1 while the address leases cannot be written to state_dir, else 0."),
		heals:         d("heals_total", "Times gtund put back what someone undid: its nftables table, net.ipv4.ip_forward, the lease file once state_dir was writable again, its TUN device (kind=tun), a route to a peer's subnets (kind=route).", "kind"),
		fights:        d("fights_total", "Times something kept undoing what gtund puts back (by kind, as heals_total) until its repairs hit their rate bound (a burst of 10, then 1 a second).", "kind"),
		offload:       d("tun_offload", "1 when the TUN device runs with offloads (TSO super-packets), 0 on the plain path."),
		dgramDropped: d("datagrams_dropped_total",
			"UDP datagrams the datagram listener (udp and kcp) dropped unopened, by reason (malformed, bad_mac1, unknown_index, bad_tag, replay, duplicate, cookie_required, ...): nothing unauthenticated reaches kcp or the TUN.", "reason"),
		dgramCookies:  d("datagram_cookies_sent_total", "Initiations answered under load with a cookie (proof of the source address asked for) instead of any Curve25519 work."),
		dgramSessions: d("datagram_sessions", "Authenticated datagram sessions (udp and kcp ride in them)."),
		dgramLoad:     d("datagram_under_load", "1 while the datagram listener asks initiations for a cookie first, else 0."),
		dnsQueries: d("dns_proxy_queries_total",
			"Queries to gtund's DNS proxy (map and dns set), by outcome: answered, failed (no cluster DNS server answered), refused (not from the pool, or not one question), busy (too many queries in flight: SERVFAIL at once).", "outcome"),
		dnsRewritten:   d("dns_proxy_rewritten_answers_total", "Answers of gtund's DNS proxy with an address given under its virtual prefix (map)."),
		storeConnected: d("store_connected", "1 while the store answers (always with backend file), 0 while etcd is unreachable and the cache in state_dir serves.", "backend"),
		storeRevision:  d("store_revision", "The etcd revision the replica has seen last (0 with backend file)."),
		storeErrors:    d("store_errors_total", "Failed requests to etcd (loads, watches, health checks)."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	metrics.Descs(ch, c.peerRxBytes, c.peerTxBytes, c.peerRxPackets, c.peerTxPackets, c.peerConnected, c.peerRTT,
		c.peerSessions, c.peerDrops, c.peers, c.sessions, c.routes, c.drops, c.handshakeFailures, c.leasesFailing, c.offload, c.handshakesPending, c.hsSources, c.heals, c.fights, c.handshakeDH, c.handshakeDHStrangers, c.knownSources,
		c.peerRekeys, c.peerKeyAge,
		c.dgramDropped, c.dgramCookies, c.dgramSessions, c.dgramLoad, c.dnsQueries, c.dnsRewritten,
		c.storeConnected, c.storeRevision, c.storeErrors)
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	b := metrics.NewBuilder(ch)
	connected := 0
	for _, p := range st.Peers {
		b.Counter(c.peerRxBytes, p.RxBytes, p.Name)
		b.Counter(c.peerTxBytes, p.TxBytes, p.Name)
		b.Counter(c.peerRxPackets, p.RxPackets, p.Name)
		b.Counter(c.peerTxPackets, p.TxPackets, p.Name)
		b.Bool(c.peerConnected, p.Connected, p.Name)
		b.Gauge(c.peerRTT, p.RTT.Seconds(), p.Name)
		b.Counter(c.peerSessions, p.Sessions, p.Name)
		b.Reasons(c.peerDrops, peerDropReasons, p.Drops, p.Name)
		b.Counter(c.peerRekeys, p.Rekeys.Sent, p.Name, "sent")
		b.Counter(c.peerRekeys, p.Rekeys.Received, p.Name, "received")
		if p.Connected {
			connected++
			b.Gauge(c.peerKeyAge, p.KeyAge.Seconds(), p.Name)
		}
	}
	b.Gauge(c.peers, float64(len(st.Peers)))
	b.Gauge(c.sessions, float64(connected))
	b.Gauge(c.routes, float64(len(st.Routes)))
	b.Reasons(c.drops, dropReasons, st.Drops)
	b.Reasons(c.handshakeFailures, handshakeReasons, st.HandshakeFailures)
	b.Gauge(c.handshakesPending, float64(st.Handshakes.Pending))
	b.Gauge(c.hsSources, float64(st.Handshakes.Sources))
	b.Reasons(c.handshakeDH, secure.DHOutcomes, st.Handshakes.DH)
	b.Counter(c.handshakeDHStrangers, st.Handshakes.DHForStrangers)
	b.Gauge(c.knownSources, float64(st.Handshakes.KnownSources))
	b.Bool(c.leasesFailing, st.LeaseError != "")
	b.Reasons(c.heals, healKinds, st.Heals)
	b.Reasons(c.fights, healKinds, st.Fights)
	b.Bool(c.offload, st.Offload)
	if st.DNS != nil && st.DNS.Proxy != nil {
		b.Reasons(c.dnsQueries, dnsOutcomes, st.DNS.Proxy.Queries)
		b.Counter(c.dnsRewritten, st.DNS.Proxy.Rewritten)
	}
	b.Bool(c.storeConnected, st.Store.Connected, st.Store.Backend)
	b.Gauge(c.storeRevision, float64(st.Store.Revision))
	b.Counter(c.storeErrors, st.Store.Errors)
	if d := st.Datagrams; d != nil {
		b.Reasons(c.dgramDropped, dgram.DropReasons, d.Dropped)
		b.Counter(c.dgramCookies, d.CookiesSent)
		b.Gauge(c.dgramSessions, float64(d.Sessions))
		b.Bool(c.dgramLoad, d.UnderLoad)
	}
}
