package packet

import "log/slog"

// Summary is a frame as a log line shows it: its source and destination,
// or why its packet has none, and what is wrong with its offload header.
// The frame is read only when a line is written (slog.LogValuer), so that
// the data path builds nothing for the drops it does not log; and only
// then, by the handler, within the call that logs it: the frame must stay
// untouched until that call returns.
type Summary []byte

// LogValue implements slog.LogValuer.
func (f Summary) LogValue() slog.Value {
	if len(f) <= VnetHdrLen {
		return slog.GroupValue(slog.Int("len", len(f)), slog.String("err", "short frame"))
	}
	pkt := f[VnetHdrLen:]
	var attrs []slog.Attr
	if h := DecodeVnetHdr(f); !h.Plain() {
		if err := h.Validate(pkt); err != nil {
			attrs = append(attrs, slog.Any("offload", err))
		}
	}
	src, dst, err := Addrs(pkt)
	if err != nil {
		return slog.GroupValue(append(attrs, slog.Int("len", len(f)), slog.Any("err", err))...)
	}
	return slog.GroupValue(append(attrs, slog.String("src", src.String()), slog.String("dst", dst.String()))...)
}
