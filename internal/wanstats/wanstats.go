// Package wanstats is the JSON format of the WAN emulator's counters
// (tools/wanemu -stats-file), shared by the emulator that writes it and the
// test helper and bench report that read it.
package wanstats

// Stats are the emulator's counters since it was last (re)started.
type Stats struct {
	Time       string      `json:"time"`
	Final      bool        `json:"final"`
	DelayNs    int64       `json:"delay_ns"`
	LossPct    float64     `json:"loss_pct"`
	Blackholed bool        `json:"blackholed"`
	Directions []Direction `json:"directions"` // "a->b" (vm to gw), then "b->a"
}

// Direction is one direction's counters. Oversize and GSO count
// super-packets that reached the emulator (should be 0); KernelDrops frames
// the kernel dropped because the emulator read too slowly.
type Direction struct {
	Name            string  `json:"name"`
	Rx              uint64  `json:"rx"`
	RxBytes         uint64  `json:"rx_bytes"`
	Tx              uint64  `json:"tx"`
	TxBytes         uint64  `json:"tx_bytes"`
	Lost            uint64  `json:"lost"`
	Blackholed      uint64  `json:"blackholed"`
	QueueFull       uint64  `json:"queue_full"`
	Oversize        uint64  `json:"oversize"`
	GSO             uint64  `json:"gso"`
	TxErrors        uint64  `json:"tx_errors"`
	Flushed         uint64  `json:"flushed"`
	KernelDrops     uint64  `json:"kernel_drops"`
	QueuePeakFrames uint64  `json:"queue_peak_frames"`
	LateMaxUs       float64 `json:"late_max_us"`
	LateAvgUs       float64 `json:"late_avg_us"`
}
