package uplink

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"edgegw/internal/testbroker"
	"edgegw/internal/testlog"
)

func tlsConfig(t *testing.T, caFile string, cert ...string) *tls.Config {
	pemData, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemData)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if len(cert) == 2 {
		c, err := tls.LoadX509KeyPair(cert[0], cert[1])
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg
}

// TestTLS: TLS and mutual TLS work; a wrong CA, an expired certificate and
// a missing client certificate each fail with the right error, logged once,
// and the next broker (plain TCP here) takes over.
func TestTLS(t *testing.T) {
	bothProtocols(t, func(t *testing.T) {
		certs := testbroker.MakeCerts(t)
		good := testbroker.TLSFiles{CA: certs.CA, Cert: certs.ServerCert, Key: certs.ServerKey}
		mutual := good
		mutual.RequireClientCert = true
		expired := testbroker.TLSFiles{CA: certs.CA, Cert: certs.ExpiredCert, Key: certs.ExpiredKey}
		for _, tc := range []struct {
			name    string
			server  testbroker.TLSFiles
			client  *tls.Config
			wantErr string // "" when the TLS broker must be used
		}{
			{"tls", good, tlsConfig(t, certs.CA), ""},
			{"mutual tls", mutual, tlsConfig(t, certs.CA, certs.ClientCert, certs.ClientKey), ""},
			{"wrong ca", good, tlsConfig(t, certs.OtherCA), "certificate signed by unknown authority"},
			{"expired", expired, tlsConfig(t, certs.CA), "certificate has expired"},
			{"no client cert", mutual, tlsConfig(t, certs.CA), ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				secure := testbroker.Start(t, testbroker.WithTLS(tc.server))
				plain := testbroker.Start(t)
				sub := testbroker.Subscribe(t, plain.Addr(), "test/#")
				secureURL := "tls://127.0.0.1:" + strings.Split(secure.Addr(), ":")[1]
				store := openBuffer(t)
				fill(t, store, 50)
				var logs testlog.Sink
				r := start(t, store, []string{secureURL, plain.URL()}, func(c *Config) {
					c.TLS = tc.client
					c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
				})
				waitEmpty(t, store)
				broker := r.up.Broker()
				switch {
				case tc.name == "no client cert":
					// The broker refuses the handshake (how it surfaces depends
					// on the TLS version): one failure logged, next broker.
					if broker != plain.URL() || strings.Count(logs.String(), "mqtt_connect_failed") != 1 {
						t.Fatalf("broker %q; log:\n%s", broker, logs.String())
					}
				case tc.wantErr == "":
					if broker != secureURL || strings.Contains(logs.String(), "mqtt_connect_failed") {
						t.Fatalf("broker %q, want the TLS one; log:\n%s", broker, logs.String())
					}
				default:
					if broker != plain.URL() {
						t.Fatalf("broker %q, want the next one", broker)
					}
					if n := strings.Count(logs.String(), "mqtt_connect_failed"); n != 1 || !strings.Contains(logs.String(), tc.wantErr) {
						t.Fatalf("want %q logged once, got %d:\n%s", tc.wantErr, n, logs.String())
					}
					if len(seqsOf(t, sub.Messages())) == 0 {
						sub.WaitFor(t, 5*time.Second, "readings at the next broker", func(m []testbroker.Message) bool { return len(seqsOf(t, m)) > 0 })
					}
				}
			})
		}
	})
}
