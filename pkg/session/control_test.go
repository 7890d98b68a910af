package session

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

func frame(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func TestMsgRoundTrip(t *testing.T) {
	msgs := []*Msg{
		{Type: TypeHello, Version: 1, Name: "vm-1"},
		{Type: TypeConfig, Version: 1, Address: "100.64.240.2/24", Gateway: "100.64.240.1", MTU: 1400,
			Routes: []string{"10.244.0.0/16", "10.96.0.0/12"}, KeepaliveMS: 2000, DeadAfter: 3},
		{Type: TypePing, Seq: 1<<63 + 5, Time: 1767225600123456789},
		{Type: TypePong, Seq: 7, Time: 42},
		{Type: TypeError, Error: "unknown peer"},
		{Type: "future-type"}, // unknown types pass the codec; the session decides
	}
	var buf bytes.Buffer
	for _, m := range msgs {
		if err := WriteMsg(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range msgs {
		got, err := ReadMsg(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	}
	if _, err := ReadMsg(&buf); !errors.Is(err, io.EOF) {
		t.Errorf("ReadMsg at the end = %v, want io.EOF", err)
	}
}

func TestWriteMsgIsOneWrite(t *testing.T) {
	// The control stream is shared by concurrent writers under a mutex; a
	// message must go out in one Write so that a partial one never interleaves.
	w := &countingWriter{}
	if err := WriteMsg(w, &Msg{Type: TypePing, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	if w.writes != 1 {
		t.Errorf("WriteMsg made %d writes, want 1", w.writes)
	}
}

type countingWriter struct{ writes int }

func (w *countingWriter) Write(p []byte) (int, error) { w.writes++; return len(p), nil }

func TestReadMsgRejects(t *testing.T) {
	huge := make([]byte, 4)
	binary.BigEndian.PutUint32(huge, MaxControlMessage+1)
	maxOK := frame([]byte(`{"type":"ping","error":"` + strings.Repeat("x", MaxControlMessage-len(`{"type":"ping","error":""}`)) + `"}`))
	cases := []struct {
		name string
		in   []byte
		want string // part of the error; "" for a clean read
	}{
		{"length 0", []byte{0, 0, 0, 0}, "out of range"},
		{"length over MaxControlMessage", append(huge, make([]byte, 16)...), "out of range"},
		{"length 4 GiB-1", []byte{0xff, 0xff, 0xff, 0xff}, "out of range"},
		{"invalid JSON", frame([]byte(`{"type":`)), "decode control message"},
		{"not an object", frame([]byte(`"ping"`)), "decode control message"},
		{"wrong field type", frame([]byte(`{"type":"ping","seq":"one"}`)), "decode control message"},
		{"missing type", frame([]byte(`{"seq":1}`)), "without type"},
		{"empty type", frame([]byte(`{"type":""}`)), "without type"},
		{"empty object", frame([]byte(`{}`)), "without type"},
		{"exactly MaxControlMessage", maxOK, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := ReadMsg(bytes.NewReader(c.in))
			if c.want == "" {
				if err != nil {
					t.Fatalf("ReadMsg = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ReadMsg accepted it: %+v", m)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("ReadMsg = %v, want an error containing %q", err, c.want)
			}
		})
	}
	if len(maxOK) != 4+MaxControlMessage {
		t.Fatalf("test frame is %d bytes", len(maxOK))
	}
}

func TestReadMsgTruncated(t *testing.T) {
	full := frame([]byte(`{"type":"ping"}`))
	for cut := 1; cut < len(full); cut++ {
		_, err := ReadMsg(bytes.NewReader(full[:cut]))
		if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			t.Errorf("cut at %d of %d bytes: %v, want an EOF error", cut, len(full), err)
		}
	}
}

// A hostile length must not make ReadMsg allocate it.
func TestReadMsgHugeLengthDoesNotAllocate(t *testing.T) {
	for _, n := range []uint32{MaxControlMessage + 1, 1 << 31} {
		in := binary.BigEndian.AppendUint32(nil, n)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 10 {
			if _, err := ReadMsg(bytes.NewReader(in)); err == nil {
				t.Fatal("accepted")
			}
		}
		runtime.ReadMemStats(&after)
		if d := after.TotalAlloc - before.TotalAlloc; d > 64<<10 {
			t.Errorf("10 ReadMsg of length %d allocated %d bytes", n, d)
		}
	}
}
