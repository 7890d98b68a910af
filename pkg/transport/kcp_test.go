package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"testing"
	"time"

	"github.com/gtun/gtun/pkg/dgram"
	"github.com/gtun/gtun/pkg/secure"
)

// kcp inside datagram sessions over loopback, with FEC: the records come
// out intact both ways, across key updates of the datagrams (the records'
// rekey interval applies to them too), and closing one end's records
// closes its datagram session (its index is gone from the listener).
func TestKCPInsideDatagrams(t *testing.T) {
	srvKey, _ := secure.GeneratePrivateKey()
	cliKey, _ := secure.GeneratePrivateKey()
	r := secure.NewResponder(secure.ServerConfig{Private: srvKey, Authorize: func(k secure.PublicKey, _ uint64) error {
		if k != cliKey.Public() {
			return secure.ErrUnknownPeer
		}
		return nil
	}})
	o := Options{FECData: 10, FECParity: 3}
	l, err := ListenKCP("127.0.0.1:0", o, dgram.ListenConfig{Responder: r})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan *Accepted, 1)
	go func() {
		a, err := l.Accept()
		if err == nil {
			accepted <- a
		}
	}()
	cli, cds, err := DialKCP(context.Background(), l.Addr().String(), o, secure.ClientConfig{Private: cliKey, ServerKey: srvKey.Public()}, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var srv *Accepted
	select {
	case srv = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("nothing accepted")
	}
	defer srv.Conn.Close()
	if srv.Peer != cliKey.Public() {
		t.Fatal("accepted peer is not the client's key")
	}

	cli.SetRekeyInterval(time.Second)
	srv.Conn.SetRekeyInterval(time.Second)

	const size = 2 << 20
	up, down := make([]byte, size), make([]byte, size)
	rand.Read(up)
	rand.Read(down)
	errs := make(chan error, 4)
	// data crosses in records of 32 KiB (control records: the test reads
	// them itself).
	const chunk = 32 << 10
	copyAndCheck := func(w, r *secure.Conn, data []byte) {
		go func() {
			for rest := data; len(rest) > 0; rest = rest[min(chunk, len(rest)):] {
				if err := w.WriteRecord(secure.TypeControl, rest[:min(chunk, len(rest))]); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
		go func() {
			got := make([]byte, 0, len(data))
			buf := make([]byte, secure.MaxRecordPlaintext+64)
			for len(got) < len(data) {
				_, payload, err := r.ReadRecord(func(int) []byte { return buf })
				if err != nil {
					errs <- err
					return
				}
				got = append(got, payload...)
			}
			if !bytes.Equal(got, data) {
				errs <- io.ErrUnexpectedEOF
				return
			}
			errs <- nil
		}()
	}
	start := time.Now()
	for round := range 3 {
		if round > 0 {
			time.Sleep(1100 * time.Millisecond) // past the rekey interval
		}
		_ = cli.SetDeadline(time.Now().Add(60 * time.Second))
		_ = srv.Conn.SetDeadline(time.Now().Add(60 * time.Second))
		copyAndCheck(cli, srv.Conn, up)
		copyAndCheck(srv.Conn, cli, down)
		for range 4 {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
	// The last datagrams of a transfer (kcp's ACKs, sent by kcp-go's
	// post-processing after the data is read) may be in flight, or lost,
	// under a key that was just stepped: a one-byte record each way until
	// both sides have followed each other's latest key. Keys step at most
	// once a second, so this settles within an exchange or two.
	ping := func(w, r *secure.Conn) {
		if err := w.WriteRecord(secure.TypeControl, []byte{1}); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, secure.MaxRecordPlaintext+64)
		if _, _, err := r.ReadRecord(func(int) []byte { return buf }); err != nil {
			t.Fatal(err)
		}
	}
	// No more steps from here: under load one settle exchange can take
	// longer than the interval, and a key that steps in every exchange
	// never settles.
	cli.SetRekeyInterval(time.Hour)
	srv.Conn.SetRekeyInterval(time.Hour)
	cst, sst := cds.Stats(), srv.Session.Stats()
	for settle := time.Now().Add(5 * time.Second); (sst.KeyUpdatesReceived != cst.KeyUpdatesSent || cst.KeyUpdatesReceived != sst.KeyUpdatesSent) && time.Now().Before(settle); {
		ping(cli, srv.Conn)
		ping(srv.Conn, cli)
		time.Sleep(20 * time.Millisecond)
		cst, sst = cds.Stats(), srv.Session.Stats()
	}
	t.Logf("datagram key updates: client sent %d, received %d; server sent %d, received %d",
		cst.KeyUpdatesSent, cst.KeyUpdatesReceived, sst.KeyUpdatesSent, sst.KeyUpdatesReceived)
	if cst.KeyUpdatesSent < 2 || sst.KeyUpdatesReceived != cst.KeyUpdatesSent || sst.KeyUpdatesSent < 2 || cst.KeyUpdatesReceived != sst.KeyUpdatesSent {
		t.Errorf("datagram keys did not rotate with the records' interval, or one side did not follow")
	}
	t.Logf("3 x 2 MiB each way over kcp in sealed datagrams (FEC 10/3) on loopback in %v; listener %+v", time.Since(start).Round(time.Millisecond), l.Stats())
	if l.Stats().Sessions != 1 {
		t.Fatalf("listener has %d sessions, want 1", l.Stats().Sessions)
	}
	closed := time.Now()
	srv.Conn.Close()
	if _, _, err := srv.Conn.ReadRecord(func(n int) []byte { return make([]byte, n) }); err == nil {
		t.Fatal("a read after close succeeded")
	}
	for l.Stats().Sessions != 0 {
		if time.Since(closed) > closeLinger+time.Second {
			t.Fatalf("listener still has %d sessions %v after the server side closed", l.Stats().Sessions, time.Since(closed))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := time.Since(closed); d < closeLinger {
		t.Fatalf("the datagram session ended %v after close, before the linger (%v) for what was written last", d, closeLinger)
	}
}
