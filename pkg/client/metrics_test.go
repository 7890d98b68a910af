package client

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/gtun/gtun/pkg/session"
)

func TestCollector(t *testing.T) {
	st := Status{Offload: false, Gateway: &GatewayStatus{TableHeals: 1}, Heals: Heals{Routes: 5, Tun: 2}, Fights: map[string]uint64{"route": 1}, Drops: map[string]uint64{"no_session": 9},
		Servers: []ServerStatus{
			{Name: "hk", State: "connected", RxBytes: 100, TxBytes: 200, RxPackets: 1, TxPackets: 2, RTT: 2 * time.Millisecond,
				Reconnects: 4, Rekeys: session.Rekeys{Sent: 3, Received: 2}, KeyAge: 1500 * time.Millisecond, Routes: []RouteStatus{{Prefix: "10.244.0.0/16", Installed: true}, {Prefix: "10.96.0.0/12", Note: "pending"}},
				DNSSuffix: "hk", DNSRenamed: 6},
			{Name: "sz", State: "reconnecting"},
		}}
	c := NewCollector(func() Status { return st })
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetHelp() == "" {
			t.Errorf("%s has no help", f.GetName())
		}
		if counter := f.GetType() == dto.MetricType_COUNTER; counter != strings.HasSuffix(f.GetName(), "_total") {
			t.Errorf("%s: type %v", f.GetName(), f.GetType())
		}
		for _, m := range f.Metric {
			key := f.GetName()
			for _, l := range m.Label {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			got[key] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	want := map[string]float64{
		"gtun_server_rx_bytes_total,server=hk":                  100,
		"gtun_server_tx_bytes_total,server=hk":                  200,
		"gtun_server_rx_packets_total,server=hk":                1,
		"gtun_server_tx_packets_total,server=hk":                2,
		"gtun_server_connected,server=hk":                       1,
		"gtun_server_connected,server=sz":                       0,
		"gtun_server_rtt_seconds,server=hk":                     0.002,
		"gtun_server_reconnects_total,server=hk":                4,
		"gtun_server_rekeys_total,direction=sent,server=hk":     3,
		"gtun_server_rekeys_total,direction=received,server=hk": 2,
		"gtun_server_rekeys_total,direction=sent,server=sz":     0,
		"gtun_server_key_age_seconds,server=hk":                 1.5,
		"gtun_dns_renamed_answers_total,server=hk":              6,
		"gtun_routes_desired,server=hk":                         2,
		"gtun_routes_installed,server=hk":                       1,
		"gtun_routes_desired,server=sz":                         0,
		"gtun_heals_total,kind=route":                           5,
		"gtun_heals_total,kind=tun":                             2,
		"gtun_heals_total,kind=gateway_table":                   1,
		"gtun_fights_total,kind=route":                          1,
		"gtun_fights_total,kind=tun":                            0,
		"gtun_fights_total,kind=ip_forward":                     0,
		"gtun_drops_total,reason=no_session":                    9,
		"gtun_drops_total,reason=queue_full":                    0,
		"gtun_tun_offload":                                      0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if _, ok := got["gtun_server_key_age_seconds,server=sz"]; ok {
		t.Error("a key age for a server without a session")
	}
}
