package session

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"testing"
	"time"

	"github.com/gtun/gtun/pkg/secure"
)

// FuzzDecodeMsg feeds arbitrary bytes to the control message decoder, with
// every message type as a seed: it must refuse or decode without
// panicking, and what it decodes must survive a round trip.
func FuzzDecodeMsg(f *testing.F) {
	for _, m := range []*Msg{
		{Type: TypeHello, Version: secure.ProtocolVersion, Name: "vm", Transport: "kcp", FECData: 10, FECParity: 3},
		testConfig(),
		{Type: TypePing, Seq: 7, Time: time.Now().UnixNano()},
		{Type: TypePong, Seq: 7, Time: 1},
		{Type: TypeError, Error: "peer removed"},
	} {
		b, err := EncodeMsg(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"type":"config","routes":["10.0.0.0/8",null,1],"mtu":1e99}`))
	f.Add([]byte(`{"type":""}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"type":"hello","version":70000}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMsg(b)
		if err != nil {
			return
		}
		if m.Type == "" {
			t.Fatal("decoded a message without type")
		}
		enc, err := EncodeMsg(m)
		if err != nil {
			if len(b) <= MaxControlMessage && jsonGrows(m) {
				return // escaping can make a valid message longer than the limit
			}
			t.Fatalf("re-encode: %v", err)
		}
		m2, err := DecodeMsg(enc)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		a, _ := json.Marshal(m)
		c, _ := json.Marshal(m2)
		if string(a) != string(c) {
			t.Fatalf("round trip changed the message:\n%s\n%s", a, c)
		}
	})
}

func jsonGrows(m *Msg) bool {
	b, _ := json.Marshal(m)
	return len(b) > MaxControlMessage
}

// FuzzSessionRecords sends arbitrary sealed records (any type, any payload,
// in any order) from an authenticated peer to a server-side session: the
// session must survive or end with an error, never panic, and never hand a
// frame to the forwarder before the peer's hello. The input is a sequence
// of [type][2-byte length][payload].
func FuzzSessionRecords(f *testing.F) {
	rec := func(typ byte, payload []byte) []byte {
		b := []byte{typ, 0, 0}
		binary.BigEndian.PutUint16(b[1:], uint16(len(payload)))
		return append(b, payload...)
	}
	hello, _ := EncodeMsg(&Msg{Type: TypeHello, Version: secure.ProtocolVersion, Name: "fuzz"})
	ping, _ := EncodeMsg(&Msg{Type: TypePing, Seq: 1, Time: 1})
	frame := make([]byte, 10+28)
	frame[10] = 0x45
	f.Add(append(rec(secure.TypeControl, hello), rec(secure.TypePacket, frame)...))
	f.Add(append(append(rec(secure.TypeControl, hello), rec(secure.TypeControl, ping)...), rec(0, []byte("x"))...))
	f.Add(rec(secure.TypePacket, frame))
	f.Add(rec(secure.TypeControl, []byte(`{"type":"config"}`)))
	f.Add(rec(9, []byte{1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		cc, sc, _ := sealed(t)
		go func() {
			defer cc.Close()
			for len(data) >= 3 {
				typ, n := data[0], int(binary.BigEndian.Uint16(data[1:]))
				data = data[3:]
				n = min(n, len(data))
				if n > 0 && cc.WriteRecord(typ, data[:n]) != nil {
					return
				}
				data = data[n:]
			}
		}()
		s, m, err := Accept(sc, 0, quiet)
		if err != nil {
			return
		}
		if m.Type != TypeHello {
			t.Fatalf("accepted a session that opened with %q", m.Type)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.SetKeepalive(time.Second, 3)
		if err := s.Run(ctx, Handlers{Packet: func([]byte) {}}); ctx.Err() != nil {
			t.Fatalf("session did not end when the peer closed: %v", err)
		}
	})
}
