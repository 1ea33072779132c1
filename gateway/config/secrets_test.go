package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"edgegw/gateway"
	"edgegw/internal/testbroker"
)

// secretsConfig is minimal with a password file and mutual TLS.
func secretsConfig(t *testing.T, password, ca, cert, key string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sensors.toml")
	doc := strings.Replace(minimal, "[mqtt]", fmt.Sprintf("[mqtt.tls]\nca_file = %q\ncert_file = %q\nkey_file = %q\n[mqtt]\nusername = \"u\"\npassword_file = %q", ca, cert, key, password), 1)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeSecret(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// TestSecretsCheckedAtLoad: `check` refuses what `run` would, with the
// line: a world-readable password file or private key, a missing CA.
func TestSecretsCheckedAtLoad(t *testing.T) {
	certs := testbroker.MakeCerts(t)
	password := filepath.Join(t.TempDir(), "mqtt.password")
	writeSecret(t, password, "secret\n", 0o640)
	if _, err := gateway.LoadConfig(secretsConfig(t, password, certs.CA, certs.ClientCert, certs.ClientKey)); err != nil {
		t.Fatalf("valid secrets refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		prep func()
		ca   string
		want string
		undo func()
	}{
		{"world-readable password", func() { writeSecret(t, password, "secret\n", 0o644) }, certs.CA,
			"10: mqtt.password_file: " + password + " is readable by every user", func() { writeSecret(t, password, "secret\n", 0o640) }},
		{"world-readable key", func() { _ = os.Chmod(certs.ClientKey, 0o644) }, certs.CA,
			"7: mqtt.tls.key_file: " + certs.ClientKey + " is readable by every user", func() { _ = os.Chmod(certs.ClientKey, 0o600) }},
		{"missing CA", func() {}, "/nonexistent/ca.pem", "5: mqtt.tls.ca_file: stat /nonexistent/ca.pem: no such file", func() {}},
	} {
		tc.prep()
		_, err := gateway.LoadConfig(secretsConfig(t, password, tc.ca, certs.ClientCert, certs.ClientKey))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		tc.undo()
	}
}

// TestSecretsDigestFollowsTheFiles: a rotated password or key changes the
// digest a reload compares, although the paths stay the same.
func TestSecretsDigestFollowsTheFiles(t *testing.T) {
	certs := testbroker.MakeCerts(t)
	password := filepath.Join(t.TempDir(), "mqtt.password")
	writeSecret(t, password, "old\n", 0o600)
	path := secretsConfig(t, password, certs.CA, certs.ClientCert, certs.ClientKey)
	load := func() [32]byte {
		t.Helper()
		cfg, err := gateway.LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Secrets.Digest
	}
	first := load()
	if load() != first {
		t.Fatal("the digest changes with nothing changed")
	}
	writeSecret(t, password, "new\n", 0o600)
	second := load()
	if second == first {
		t.Error("a rotated password keeps the digest")
	}
	other := testbroker.MakeCerts(t)
	for _, f := range [][2]string{{other.ClientCert, certs.ClientCert}, {other.ClientKey, certs.ClientKey}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		writeSecret(t, f[1], string(b), 0o600)
	}
	if load() == second {
		t.Error("a rotated client certificate keeps the digest")
	}
}
