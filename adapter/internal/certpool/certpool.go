// Package certpool reads CA bundles (PEM files) into certificate pools: the
// one way the adapter's TLS clients (remote write, OTLP, other adapters) and
// its gRPC server (client CAs) read them.
package certpool

import (
	"crypto/x509"
	"fmt"
	"os"
)

// AppendFile appends the certificates of the PEM file at path to pool. A
// file that cannot be read, or that holds no PEM certificate, is an error
// naming the path (never the content).
func AppendFile(pool *x509.CertPool, path string) error {
	pem, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s holds no PEM certificate", path)
	}
	return nil
}

// FromFile is a new pool holding the certificates of the PEM file at path.
func FromFile(path string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if err := AppendFile(pool, path); err != nil {
		return nil, err
	}
	return pool, nil
}
