package session

import (
	"reflect"
	"strings"
	"testing"
)

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
	for _, want := range msgs {
		b, err := EncodeMsg(want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeMsg(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	}
}

func TestDecodeMsgRejects(t *testing.T) {
	maxOK := []byte(`{"type":"ping","error":"` + strings.Repeat("x", MaxControlMessage-len(`{"type":"ping","error":""}`)) + `"}`)
	cases := []struct {
		name string
		in   []byte
		want string // part of the error; "" for a clean decode
	}{
		{"empty", nil, "out of range"},
		{"over MaxControlMessage", append([]byte(`{"type":"ping","error":"`), make([]byte, MaxControlMessage)...), "out of range"},
		{"invalid JSON", []byte(`{"type":`), "decode control message"},
		{"not an object", []byte(`"ping"`), "decode control message"},
		{"wrong field type", []byte(`{"type":"ping","seq":"one"}`), "decode control message"},
		{"missing type", []byte(`{"seq":1}`), "without type"},
		{"empty type", []byte(`{"type":""}`), "without type"},
		{"empty object", []byte(`{}`), "without type"},
		{"exactly MaxControlMessage", maxOK, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := DecodeMsg(c.in)
			if c.want == "" {
				if err != nil {
					t.Fatalf("DecodeMsg = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("DecodeMsg accepted it: %+v", m)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("DecodeMsg = %v, want an error containing %q", err, c.want)
			}
		})
	}
	if len(maxOK) != MaxControlMessage {
		t.Fatalf("test message is %d bytes", len(maxOK))
	}
	if _, err := EncodeMsg(&Msg{Type: TypeError, Error: strings.Repeat("x", MaxControlMessage)}); err == nil {
		t.Error("EncodeMsg made an oversized message")
	}
}
