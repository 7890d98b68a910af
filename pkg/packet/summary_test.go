package packet

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestSummary(t *testing.T) {
	frame := make([]byte, VnetHdrLen+20)
	frame[VnetHdrLen] = 0x45
	copy(frame[VnetHdrLen+12:], []byte{100, 64, 240, 2, 10, 244, 1, 20})
	gso := append([]byte(nil), frame...)
	gso[1] = 1 // GSO TCPv4 without checksum offload
	for _, c := range []struct {
		name  string
		frame []byte
		want  string
	}{
		{"addresses", frame, "frame.src=100.64.240.2 frame.dst=10.244.1.20"},
		{"short", frame[:VnetHdrLen], `frame.len=10 frame.err="short frame"`},
		{"not IP", append(make([]byte, VnetHdrLen), 0x10, 0), `frame.len=12 frame.err="malformed IP packet"`},
		{"bad offload", gso, "frame.offload="},
	} {
		var buf bytes.Buffer
		slog.New(slog.NewTextHandler(&buf, nil)).Warn("drop", "frame", Summary(c.frame))
		if !strings.Contains(buf.String(), c.want) {
			t.Errorf("%s: %s; want %s", c.name, buf.String(), c.want)
		}
	}
}
