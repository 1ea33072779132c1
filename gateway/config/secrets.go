package config

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
)

// Secrets are what the config's secret files hold, read at load so that
// `edgegw check` refuses what `run` would. Never logged.
type Secrets struct {
	// Password is mqtt.password_file's first line; nil without one.
	Password []byte
	// TLS is built from [mqtt.tls]; nil when the section is empty.
	TLS *tls.Config
	// Digest covers what every secret file held: a reload compares it, as
	// a rotated password or certificate keeps its path.
	Digest [32]byte
}

// secrets reads the password and TLS files into c.Secrets.
func (v *validator) secrets() {
	m := &v.c.MQTT
	digest := sha256.New()
	read := func(key, path string, private bool) []byte {
		b := v.readSecret(key, path, private)
		digest.Write([]byte(key))
		digest.Write(b)
		return b
	}
	defer func() { digest.Sum(v.c.Secrets.Digest[:0]) }()
	if m.PasswordFile != "" {
		v.c.Secrets.Password = []byte(strings.TrimRight(string(read("mqtt.password_file", m.PasswordFile, true)), "\r\n"))
	}
	t := &m.TLS
	if t.CAFile == "" && t.CertFile == "" && t.ServerName == "" {
		return
	}
	cfg := &tls.Config{ServerName: t.ServerName, MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem := read("mqtt.tls.ca_file", t.CAFile, false)
		cfg.RootCAs = x509.NewCertPool()
		if pem != nil && !cfg.RootCAs.AppendCertsFromPEM(pem) {
			v.errorf("mqtt.tls.ca_file", "%s holds no PEM certificate", t.CAFile)
		}
	}
	if t.CertFile != "" && t.KeyFile != "" {
		certPEM, keyPEM := read("mqtt.tls.cert_file", t.CertFile, false), read("mqtt.tls.key_file", t.KeyFile, true)
		if certPEM != nil && keyPEM != nil {
			cert, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				v.errorf("mqtt.tls.cert_file", "%s and %s: %v", t.CertFile, t.KeyFile, err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
	}
	v.c.Secrets.TLS = cfg
}

// readSecret reads one of the files the config names; a private one
// (password, private key) must not be readable by every user.
func (v *validator) readSecret(key, path string, private bool) []byte {
	fi, err := os.Stat(path)
	if err != nil {
		v.errorf(key, "%v", err)
		return nil
	}
	if private && fi.Mode().Perm()&0o004 != 0 {
		v.errorf(key, "%s is readable by every user (mode %04o): chmod o-r it", path, fi.Mode().Perm())
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		v.errorf(key, "%v", err)
		return nil
	}
	return b
}
