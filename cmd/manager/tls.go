package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// selfSignedCertificate writes a new self-signed serving certificate for localhost and this
// host's name into a new temporary folder, as certName and keyName, and returns the folder.
// It lets `make run` start the webhook server without an installation; no apiserver trusts it.
func selfSignedCertificate(certName, keyName string) (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return "", err
	}
	names := []string{"localhost"}
	if host, err := os.Hostname(); err == nil && host != "" {
		names = append(names, host)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "imagegate (self-signed, local development)"},
		DNSNames:     names,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "imagegate-serving-cert-")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, certName), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, keyName), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", err
	}
	return dir, nil
}

// clientCertificates returns the TLS option that makes the webhook server require a client
// certificate signed by a CA in the PEM file caFile (authenticated callers: only the apiserver
// holds such a certificate), or an error naming what is wrong with the file. The file is read
// again when it changes (a rotated CA), at the next handshake; a new content that holds no
// certificate is ignored and the last good one stays in force, so a half-written file never
// opens the port.
func clientCertificates(caFile string) (func(*tls.Config), error) {
	cas := &clientCAs{file: caFile}
	if err := cas.load(); err != nil {
		return nil, err
	}
	return func(c *tls.Config) {
		c.ClientCAs = cas.pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cfg := c.Clone()
			cfg.GetConfigForClient = nil
			cfg.ClientCAs = cas.current()
			return cfg, nil
		}
	}, nil
}

// clientCAs is the client CA file, reloaded when its size or modification time changes.
type clientCAs struct {
	file string
	mu   sync.Mutex
	pool *x509.CertPool
	size int64
	mod  time.Time
}

func (c *clientCAs) load() error {
	info, err := os.Stat(c.file)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(c.file)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return fmt.Errorf("%s holds no PEM certificate", c.file)
	}
	c.pool, c.size, c.mod = pool, info.Size(), info.ModTime()
	return nil
}

// current is the pool in force, read again first when the file changed.
func (c *clientCAs) current() *x509.CertPool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if info, err := os.Stat(c.file); err == nil && (info.Size() != c.size || !info.ModTime().Equal(c.mod)) {
		_ = c.load() // on error the last good pool stays
	}
	return c.pool
}
