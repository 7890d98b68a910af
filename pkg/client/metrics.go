package client

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gtun/gtun/pkg/metrics"
	"github.com/gtun/gtun/pkg/route"
	"github.com/gtun/gtun/pkg/tun"
)

// dropReasons are the names of gtun's drop reasons, reported from the
// start at 0.
var dropReasons = func() (names []string) {
	for r := range numDropReasons {
		names = append(names, r.String())
	}
	return names
}()

// Collector exposes gtun's state as Prometheus metrics (gtun_*). It reads a
// status snapshot at scrape time, so the packet path does nothing for it.
// Server labels come from the config, so their number is bounded.
type Collector struct {
	status func() Status

	rxBytes, txBytes, rxPackets, txPackets *prometheus.Desc
	connected, rtt, reconnects             *prometheus.Desc
	routesDesired, routesInstalled         *prometheus.Desc
	heals, fights, drops, offload          *prometheus.Desc
	rekeys, keyAge                         *prometheus.Desc
	dnsRenamed                             *prometheus.Desc
}

// NewCollector builds the collector over a status source (Client.Status).
func NewCollector(status func() Status) *Collector {
	server := []string{"server"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("gtun_"+name, help, labels, nil)
	}
	return &Collector{status: status,
		rxBytes:    d("server_rx_bytes_total", "Bytes of data frames received from the server (IP packets plus a 10-byte offload header each), across reconnects.", server...),
		txBytes:    d("server_tx_bytes_total", "Bytes of data frames sent to the server (IP packets plus a 10-byte offload header each), across reconnects.", server...),
		rxPackets:  d("server_rx_packets_total", "Frames received from the server (an offloaded super-packet counts once).", server...),
		txPackets:  d("server_tx_packets_total", "Frames sent to the server (an offloaded super-packet counts once).", server...),
		connected:  d("server_connected", "1 while the session with the server is up, else 0.", server...),
		rtt:        d("server_rtt_seconds", "Last keepalive round trip to the server (0 before the first).", server...),
		reconnects: d("server_reconnects_total", "Sessions set up again after the first one (reconnects, failovers, failbacks).", server...),
		rekeys: d("server_rekeys_total", "Key updates of the sessions with the server, across reconnects: direction=sent (gtun replaced its send key), direction=received (the server replaced its own).",
			"server", "direction"),
		keyAge:          d("server_key_age_seconds", "How long gtun's current send key of the session with the server has been in use (while connected); above the server's rekey_interval plus a keepalive, keys are not rotating.", server...),
		routesDesired:   d("routes_desired", "Routes gtun wants on its TUN device for the server: what it pushes, narrowed by the config.", server...),
		routesInstalled: d("routes_installed", "Desired routes that are installed in the kernel now.", server...),
		heals:           d("heals_total", "Repairs gtun made: kind=route (a deleted or replaced route put back), kind=tun (the TUN device, its address or link state restored), kind=gateway_table (gateway mode's nftables table restored), kind=ip_forward (gateway mode's net.ipv4.ip_forward turned back on).", "kind"),
		fights:          d("fights_total", "Times something kept undoing what gtun puts back (by kind, as heals_total) until its repairs hit their rate bound (a burst of 10, then 1 a second).", "kind"),
		drops:           d("drops_total", "Packets gtun dropped, by reason (no_session while reconnecting, queue_full, ...).", "reason"),
		dnsRenamed:      d("dns_renamed_answers_total", "Answers gtun's forwarder gave back under the server's dns_suffix (servers with a dns_suffix only).", server...),
		offload:         d("tun_offload", "1 when the TUN device runs with offloads (TSO super-packets), 0 on the plain path."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	metrics.Descs(ch, c.rxBytes, c.txBytes, c.rxPackets, c.txPackets, c.connected, c.rtt, c.reconnects,
		c.routesDesired, c.routesInstalled, c.heals, c.fights, c.drops, c.offload, c.rekeys, c.keyAge, c.dnsRenamed)
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	b := metrics.NewBuilder(ch)
	for _, s := range st.Servers {
		b.Counter(c.rxBytes, s.RxBytes, s.Name)
		b.Counter(c.txBytes, s.TxBytes, s.Name)
		b.Counter(c.rxPackets, s.RxPackets, s.Name)
		b.Counter(c.txPackets, s.TxPackets, s.Name)
		b.Bool(c.connected, s.State == "connected", s.Name)
		b.Gauge(c.rtt, s.RTT.Seconds(), s.Name)
		b.Counter(c.reconnects, s.Reconnects, s.Name)
		b.Counter(c.rekeys, s.Rekeys.Sent, s.Name, "sent")
		b.Counter(c.rekeys, s.Rekeys.Received, s.Name, "received")
		if s.State == "connected" {
			b.Gauge(c.keyAge, s.KeyAge.Seconds(), s.Name)
		}
		if s.DNSSuffix != "" {
			b.Counter(c.dnsRenamed, s.DNSRenamed, s.Name)
		}
		installed := 0
		for _, r := range s.Routes {
			if r.Installed {
				installed++
			}
		}
		b.Gauge(c.routesDesired, float64(len(s.Routes)), s.Name)
		b.Gauge(c.routesInstalled, float64(installed), s.Name)
	}
	b.Counter(c.heals, st.Heals.Routes, route.HealKind)
	b.Counter(c.heals, st.Heals.Tun, tun.HealKind)
	kinds := []string{route.HealKind, tun.HealKind}
	if st.Gateway != nil {
		b.Counter(c.heals, st.Gateway.TableHeals, HealGatewayTable)
		b.Counter(c.heals, st.Gateway.ForwardHeals, HealIPForward)
		kinds = append(kinds, HealGatewayTable, HealIPForward)
	}
	b.Reasons(c.fights, kinds, st.Fights)
	b.Reasons(c.drops, dropReasons, st.Drops)
	b.Bool(c.offload, st.Offload)
}
