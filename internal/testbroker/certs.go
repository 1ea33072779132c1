package testbroker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Certs are PEM files of a test PKI made for one test.
type Certs struct {
	CA                      string // the CA that signs everything below
	ServerCert, ServerKey   string // for 127.0.0.1, valid now
	ClientCert, ClientKey   string // a client certificate (mutual TLS)
	ExpiredCert, ExpiredKey string // for 127.0.0.1, expired yesterday
	OtherCA                 string // a CA that signed none of these
}

// MakeCerts writes a fresh test PKI into a temporary directory.
func MakeCerts(t testing.TB) Certs {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	caKey, caCert := newCA(t, "edgegw test CA")
	_, otherCert := newCA(t, "some other CA")
	c := Certs{
		CA:      writePEM(t, dir, "ca.pem", "CERTIFICATE", caCert.Raw),
		OtherCA: writePEM(t, dir, "other-ca.pem", "CERTIFICATE", otherCert.Raw),
	}
	c.ServerCert, c.ServerKey = leaf(t, dir, "server", caCert, caKey, now.Add(-time.Hour), now.Add(24*time.Hour), true)
	c.ClientCert, c.ClientKey = leaf(t, dir, "client", caCert, caKey, now.Add(-time.Hour), now.Add(24*time.Hour), false)
	c.ExpiredCert, c.ExpiredKey = leaf(t, dir, "expired", caCert, caKey, now.Add(-48*time.Hour), now.Add(-24*time.Hour), true)
	return c
}

var serial int64

func newCA(t testing.TB, name string) (*ecdsa.PrivateKey, *x509.Certificate) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return key, cert
}

func leaf(t testing.TB, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, from, until time.Time, server bool) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: from, NotAfter: until, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, name+".pem", "CERTIFICATE", der), writePEM(t, dir, name+"-key.pem", "EC PRIVATE KEY", keyDER)
}

func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
