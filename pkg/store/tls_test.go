package store

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/internal/etcdtest"
	"github.com/gtun/gtun/pkg/config"
)

// pki writes a CA, a server certificate for 127.0.0.1 and two client
// certificates (one of them signed by another CA, otherCA) as PEM files.
type pki struct {
	dir, ca, otherCA, serverCert, serverKey, clientCert, clientKey, strangerCert, strangerKey string
}

func newPKI(t *testing.T) pki {
	t.Helper()
	p := pki{dir: t.TempDir()}
	ca, caKey := cert(t, nil, nil, "ca", true)
	other, otherKey := cert(t, nil, nil, "other-ca", true)
	p.ca = write(t, p.dir, "ca.pem", "CERTIFICATE", ca.Raw)
	p.otherCA = write(t, p.dir, "other-ca.pem", "CERTIFICATE", other.Raw)
	srv, srvKey := cert(t, ca, caKey, "etcd", false)
	p.serverCert, p.serverKey = write(t, p.dir, "server.pem", "CERTIFICATE", srv.Raw), writeKey(t, p.dir, "server.key", srvKey)
	cl, clKey := cert(t, ca, caKey, "gtund", false)
	p.clientCert, p.clientKey = write(t, p.dir, "client.pem", "CERTIFICATE", cl.Raw), writeKey(t, p.dir, "client.key", clKey)
	st, stKey := cert(t, other, otherKey, "stranger", false)
	p.strangerCert, p.strangerKey = write(t, p.dir, "stranger.pem", "CERTIFICATE", st.Raw), writeKey(t, p.dir, "stranger.key", stKey)
	return p
}

func cert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, name string, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, BasicConstraintsValid: true, IsCA: isCA}
	if parent == nil {
		parent, parentKey = tmpl, k
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func write(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeKey(t *testing.T, dir, name string, k *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return write(t, dir, name, "EC PRIVATE KEY", der)
}

// With TLS and client certificates, as docs/ha.md deploys etcd: a replica
// with the CA and its certificate works; one whose certificate another CA
// signed, or with none, is refused.
func TestTLS(t *testing.T) {
	p := newPKI(t)
	cluster := etcdtest.Start(t, etcdtest.Options{TLS: &etcdtest.TLS{CA: p.ca, Cert: p.serverCert, Key: p.serverKey}})
	st := config.Store{Backend: config.StoreEtcd, Endpoints: cluster.Endpoints(), Prefix: "/t", DialTimeout: 2 * time.Second,
		CAFile: p.ca, CertFile: p.clientCert, KeyFile: p.clientKey}
	e, err := Dial(st)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.AddPeer(config.PeerSection{Name: "vm", PublicKey: newKey(t).String()}, accept); err != nil {
		t.Fatalf("with the CA and a client certificate: %v", err)
	}
	// Refused either way, the error says it is TLS and why, not only that
	// etcd did not answer in time (gRPC keeps the handshake's failure to
	// itself).
	for what, c := range map[string]struct {
		s    config.Store
		want string
	}{
		"a certificate of another CA": {config.Store{CertFile: p.strangerCert, KeyFile: p.strangerKey, CAFile: p.ca}, "remote error: tls: "},
		"no certificate":              {config.Store{CAFile: p.ca}, "remote error: tls: "},
		"etcd's certificate refused":  {config.Store{CertFile: p.clientCert, KeyFile: p.clientKey, CAFile: p.otherCA}, "certificate signed by unknown authority"},
	} {
		s := c.s
		s.Backend, s.Endpoints, s.Prefix, s.DialTimeout = config.StoreEtcd, cluster.Endpoints(), "/t", time.Second
		e2, err := Dial(s)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e2.Load(t.Context())
		var ue *UnavailableError
		if err == nil || !errors.As(err, &ue) {
			t.Errorf("%s: %v, want refused", what, err)
		} else if ue.TLS == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "TLS with "+cluster.Endpoints()[0]) {
			t.Errorf("%s: %v, want the TLS failure (%q) named", what, err, c.want)
		} else {
			t.Logf("%s: %v", what, err)
		}
		e2.Close()
	}

	// etcd away (nothing listens): no TLS failure to name.
	cluster.StopAll()
	_, err = e.Load(t.Context())
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.TLS != nil {
		t.Errorf("etcd stopped: %v, want unavailable with no TLS failure", err)
	}
}
