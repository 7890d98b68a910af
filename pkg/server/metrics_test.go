package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/gtun/gtun/pkg/guard"
	"github.com/gtun/gtun/pkg/secure"
	"github.com/gtun/gtun/pkg/session"
)

// gather collects c once and indexes the values by name and label values.
func gather(t *testing.T, c prometheus.Collector) (map[string]map[string]float64, map[string]*dto.MetricFamily) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry() // also checks Describe against Collect
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	vals, byName := map[string]map[string]float64{}, map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
		vals[f.GetName()] = map[string]float64{}
		for _, m := range f.Metric {
			key := ""
			for _, l := range m.Label {
				if key != "" {
					key += ","
				}
				key += l.GetName() + "=" + l.GetValue()
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			vals[f.GetName()][key] = v
		}
	}
	return vals, byName
}

func TestCollector(t *testing.T) {
	st := Status{Handshakes: HandshakeStatus{Stats: guard.Stats{Pending: 3, Sources: 5, KnownSources: 4},
		HandshakeCounts: secure.HandshakeCounts{DH: map[string]uint64{"authenticated": 6, "unknown_peer": 2}, DHForStrangers: 2}}, Routes: []string{"10.244.0.0/16", "10.96.0.0/12"}, Offload: true,
		HandshakeFailures: map[string]uint64{"unknown_peer": 4, "rate_limited": 2, "new_reason": 1},
		Drops:             map[string]uint64{DropNoRoute.String(): 7, DropACL.String(): 1},
		Heals:             map[string]uint64{HealNFTables: 2, HealRoute: 1},
		Fights:            map[string]uint64{HealRoute: 1},
		DNS:               &DNSStatus{Proxy: &DNSProxyStatus{Queries: map[string]uint64{"answered": 9, "refused": 1}, Rewritten: 8}},
		Peers: []PeerStatus{
			{Name: "vm1", Connected: true, RxBytes: 1000, TxBytes: 2000, RxPackets: 10, TxPackets: 20,
				RTT: 1500 * time.Microsecond, Sessions: 3, Drops: map[string]uint64{DropACL.String(): 1},
				Rekeys: session.Rekeys{Sent: 7, Received: 5}, KeyAge: 1500 * time.Millisecond},
			{Name: "vm2"},
		}}
	c := NewCollector(func() Status { return st })
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
	vals, fams := gather(t, c)
	want := map[string]map[string]float64{
		"gtund_peer_rx_bytes_total":   {"peer=vm1": 1000, "peer=vm2": 0},
		"gtund_peer_tx_bytes_total":   {"peer=vm1": 2000},
		"gtund_peer_rx_packets_total": {"peer=vm1": 10},
		"gtund_peer_tx_packets_total": {"peer=vm1": 20},
		"gtund_peer_connected":        {"peer=vm1": 1, "peer=vm2": 0},
		"gtund_peer_rtt_seconds":      {"peer=vm1": 0.0015},
		"gtund_peer_sessions_total":   {"peer=vm1": 3, "peer=vm2": 0},
		"gtund_peer_rekeys_total":     {"direction=sent,peer=vm1": 7, "direction=received,peer=vm1": 5, "direction=sent,peer=vm2": 0},
		"gtund_peer_key_age_seconds":  {"peer=vm1": 1.5},
		"gtund_peer_drops_total":      {"peer=vm1,reason=acl": 1, "peer=vm1,reason=spoofed_source": 0, "peer=vm2,reason=queue_full": 0},
		"gtund_peers":                 {"": 2},
		"gtund_sessions":              {"": 1},
		"gtund_routes":                {"": 2},
		"gtund_drops_total":           {"reason=no_route": 7, "reason=acl": 1, "reason=tun_write": 0},
		// known reasons from the start, and reasons added later (by other code) as they come
		"gtund_handshake_failures_total":          {"reason=unknown_peer": 4, "reason=rate_limited": 2, "reason=new_reason": 1, "reason=too_many_pending_source": 0},
		"gtund_leases_persist_failing":            {"": 0},
		"gtund_tun_offload":                       {"": 1},
		"gtund_handshakes_in_progress":            {"": 3},
		"gtund_handshake_sources":                 {"": 5},
		"gtund_handshake_dh_total":                {"outcome=authenticated": 6, "outcome=unknown_peer": 2, "outcome=replay": 0},
		"gtund_handshake_dh_strangers_total":      {"": 2},
		"gtund_handshake_known_sources":           {"": 4},
		"gtund_heals_total":                       {"kind=nftables_table": 2, "kind=ip_forward": 0, "kind=leases_written": 0, "kind=tun": 0, "kind=route": 1},
		"gtund_fights_total":                      {"kind=nftables_table": 0, "kind=route": 1},
		"gtund_dns_proxy_queries_total":           {"outcome=answered": 9, "outcome=failed": 0, "outcome=refused": 1},
		"gtund_dns_proxy_rewritten_answers_total": {"": 8},
	}
	for name, series := range want {
		for labels, v := range series {
			got, ok := vals[name][labels]
			if !ok || got != v {
				t.Errorf("%s{%s} = %v (present %v), want %v", name, labels, got, ok, v)
			}
		}
	}
	for name, f := range fams {
		counter := f.GetType() == dto.MetricType_COUNTER
		if total := len(name) > 6 && name[len(name)-6:] == "_total"; counter != total {
			t.Errorf("%s: type %v", name, f.GetType())
		}
		if f.GetHelp() == "" {
			t.Errorf("%s has no help", name)
		}
	}
	if _, ok := vals["gtund_peer_key_age_seconds"]["peer=vm2"]; ok {
		t.Error("a key age for a peer without a session")
	}
	if n := len(vals["gtund_peer_drops_total"]); n != 2*len(peerDropReasons) {
		t.Errorf("%d peer drop series, want one per known reason per peer (%d)", n, 2*len(peerDropReasons))
	}
}

// A scrape of a gtund with 1,000 peers: what Prometheus costs it every
// scrape interval (the packet path pays nothing).
func BenchmarkCollect1000Peers(b *testing.B) {
	st := Status{Drops: map[string]uint64{DropNoRoute.String(): 1}}
	for i := range 1000 {
		st.Peers = append(st.Peers, PeerStatus{Name: fmt.Sprintf("vm%04d", i), Connected: true, RxBytes: 1, Drops: map[string]uint64{DropACL.String(): 1}})
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(func() Status { return st }))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
