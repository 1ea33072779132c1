package config

import (
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
}

// secrets reads the password and TLS files into c.Secrets.
func (v *validator) secrets() {
	m := &v.c.MQTT
	if m.PasswordFile != "" {
		v.c.Secrets.Password = v.password(m.PasswordFile)
	}
	t := &m.TLS
	if t.CAFile == "" && t.CertFile == "" && t.ServerName == "" {
		return
	}
	cfg := &tls.Config{ServerName: t.ServerName, MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		pool := x509.NewCertPool()
		switch {
		case err != nil:
			v.errorf("mqtt.tls.ca_file", "%v", err)
		case !pool.AppendCertsFromPEM(pem):
			v.errorf("mqtt.tls.ca_file", "%s holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" && t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			v.errorf("mqtt.tls.cert_file", "%v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	v.c.Secrets.TLS = cfg
}

// password reads a password file that only its owner and group may read.
func (v *validator) password(path string) []byte {
	const key = "mqtt.password_file"
	fi, err := os.Stat(path)
	if err != nil {
		v.errorf(key, "%v", err)
		return nil
	}
	if fi.Mode().Perm()&0o004 != 0 {
		v.errorf(key, "%s is readable by every user (mode %04o): chmod o-r it", path, fi.Mode().Perm())
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		v.errorf(key, "%v", err)
		return nil
	}
	return []byte(strings.TrimRight(string(b), "\r\n"))
}
