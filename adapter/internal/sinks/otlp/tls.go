package otlp

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/certpool"
	"github.com/meshmetrics/meshmetrics/config"
)

// tlsConfig is the TLS setup of o, nil when it sends in plaintext. The
// client certificate is read again when its files change (cert-manager
// renews them in place), at the next handshake.
func tlsConfig(o *config.OtlpParams, ep endpoint) (*tls.Config, error) {
	if ep.plaintext {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.InsecureSkipVerify} //nolint:gosec // opt-in, for tests
	if o.CaFile != "" {
		pool, err := certpool.FromFile(o.CaFile)
		if err != nil {
			return nil, fmt.Errorf("otlp.ca_file: %w", err)
		}
		c.RootCAs = pool
	}
	if o.CertFile != "" {
		kp := &keyPair{certFile: o.CertFile, keyFile: o.KeyFile}
		if _, err := kp.load(); err != nil {
			return nil, err
		}
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.load() }
	}
	return c, nil
}

// keyPair is a client certificate read from files, read again when either
// file's modification time or size changes; a failed reload keeps the last
// good certificate.
type keyPair struct {
	certFile, keyFile string

	mu     sync.Mutex
	cert   *tls.Certificate
	stamps [2]fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

func (k *keyPair) load() (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	c, err1 := stampOf(k.certFile)
	kf, err2 := stampOf(k.keyFile)
	if err1 == nil && err2 == nil && k.cert != nil && k.stamps == [2]fileStamp{c, kf} {
		return k.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		if k.cert != nil {
			return k.cert, nil
		}
		return nil, fmt.Errorf("otlp.cert_file/key_file: %w", err)
	}
	k.cert, k.stamps = &cert, [2]fileStamp{c, kf}
	return k.cert, nil
}
