package grpcserver

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/meshmetrics/meshmetrics/adapter/internal/certpool"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// The environment variables of the out-of-process adapter walkthrough, which
// the seed adapter and most Mixer adapters read.
const (
	EnvCredential  = "GRPC_ADAPTER_CREDENTIAL"  // server certificate (PEM)
	EnvPrivateKey  = "GRPC_ADAPTER_PRIVATE_KEY" // server key (PEM)
	EnvCertificate = "GRPC_ADAPTER_CERTIFICATE" // CA that verifies Mixer's client certificate
)

// TLSFiles name the PEM files of the server's TLS.
type TLSFiles struct {
	Cert, Key string
	// ClientCA, when set, makes TLS mutual: a client certificate signed by
	// it is required, as Mixer's `mutual` authentication sends one.
	ClientCA string
}

// Enabled reports whether TLS is configured.
func (f TLSFiles) Enabled() bool { return f.Cert != "" || f.Key != "" || f.ClientCA != "" }

// TLSFilesFromEnv reads the GRPC_ADAPTER_* convention.
func TLSFilesFromEnv(getenv func(string) string) TLSFiles {
	return TLSFiles{Cert: getenv(EnvCredential), Key: getenv(EnvPrivateKey), ClientCA: getenv(EnvCertificate)}
}

// reloadEvery bounds how often the files are checked for changes.
const reloadEvery = time.Second

// TLSConfig serves the current certificates: files are re-read when they
// change (Kubernetes rotates mounted Secrets in place), without a restart. A
// file that fails to load keeps the previous certificates in use.
type TLSConfig struct {
	files TLSFiles
	// OnReloadError is told about a failed reload.
	OnReloadError func(error)

	mu       sync.Mutex
	checked  time.Time
	stamps   [3]time.Time
	cert     *tls.Certificate
	clientCA *x509.CertPool
}

// NewTLSConfig loads the files once, failing if they are unusable.
func NewTLSConfig(files TLSFiles) (*TLSConfig, error) {
	if files.Cert == "" || files.Key == "" {
		return nil, errors.New("TLS needs both a certificate and a key (--tls-cert and --tls-key, or " + EnvCredential + " and " + EnvPrivateKey + ")")
	}
	c := &TLSConfig{files: files, OnReloadError: func(error) {}}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// Mutual reports whether client certificates are required.
func (c *TLSConfig) Mutual() bool { return c.files.ClientCA != "" }

func (c *TLSConfig) load() error {
	cert, err := tls.LoadX509KeyPair(c.files.Cert, c.files.Key)
	if err != nil {
		return fmt.Errorf("loading the server key pair (%s, %s): %w", c.files.Cert, c.files.Key, err)
	}
	var pool *x509.CertPool
	if c.files.ClientCA != "" {
		if pool, err = certpool.FromFile(c.files.ClientCA); err != nil {
			return fmt.Errorf("reading the client CA: %w", err)
		}
	}
	c.cert, c.clientCA = &cert, pool
	c.stamps = c.modTimes()
	return nil
}

func (c *TLSConfig) modTimes() [3]time.Time {
	var out [3]time.Time
	for i, f := range []string{c.files.Cert, c.files.Key, c.files.ClientCA} {
		if f == "" {
			continue
		}
		if st, err := os.Stat(f); err == nil {
			out[i] = st.ModTime()
		}
	}
	return out
}

// current returns the certificates, reloading them if a file changed.
func (c *TLSConfig) current() (*tls.Certificate, *x509.CertPool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.checked) >= reloadEvery {
		c.checked = now
		if c.modTimes() != c.stamps {
			prevCert, prevCA := c.cert, c.clientCA
			if err := c.load(); err != nil {
				c.cert, c.clientCA = prevCert, prevCA
				c.OnReloadError(err)
			}
		}
	}
	return c.cert, c.clientCA
}

// Reload re-reads the files now, whether or not they look changed (SIGHUP).
// A file that fails to load keeps the previous certificates in use; the
// error is returned.
func (c *TLSConfig) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checked = time.Now()
	prevCert, prevCA, prevStamps := c.cert, c.clientCA, c.stamps
	if err := c.load(); err != nil {
		c.cert, c.clientCA, c.stamps = prevCert, prevCA, prevStamps
		return err
	}
	return nil
}

// ServerConfig is the tls.Config for the gRPC server.
func (c *TLSConfig) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := c.current()
			cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert}, NextProtos: []string{"h2"}}
			if pool != nil {
				cfg.ClientAuth = tls.RequireAndVerifyClientCert
				cfg.ClientCAs = pool
			}
			return cfg, nil
		},
	}
}

// Reasons a TLS handshake fails, as meshmetrics_auth_refused_total counts
// them.
const (
	RefusedNoClientCertificate = telemetry.AuthNoClientCertificate
	RefusedUnknownAuthority    = telemetry.AuthUnknownAuthority
	RefusedBadCertificate      = telemetry.AuthBadCertificate
	RefusedSPIFFEID            = telemetry.AuthSPIFFEID
	RefusedNotTLS              = telemetry.AuthNotTLS
	RefusedHandshake           = telemetry.AuthHandshakeFailed
	// RefusedConnectionClosed: the peer closed the connection during the
	// handshake (a TCP probe, a port scan). Counted, not worth a warning.
	RefusedConnectionClosed = telemetry.AuthConnectionClosed
)

// observedCreds reports every failed server handshake: refused clients are
// counted by reason and logged with their address (rate-limited by reason),
// instead of vanishing inside grpc-go.
type observedCreds struct {
	credentials.TransportCredentials
	onFail func(reason string, peer net.Addr, err error)
}

func (c observedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		c.onFail(HandshakeFailure(err), raw.RemoteAddr(), err)
	}
	return conn, info, err
}

func (c observedCreds) Clone() credentials.TransportCredentials {
	return observedCreds{TransportCredentials: c.TransportCredentials.Clone(), onFail: c.onFail}
}

// HandshakeFailure names why a server handshake failed.
func HandshakeFailure(err error) string {
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var hostname x509.HostnameError
	var rec tls.RecordHeaderError
	switch {
	case errors.Is(err, errSPIFFENotAllowed):
		return RefusedSPIFFEID
	case errors.Is(err, errNoClientCertificate), strings.Contains(err.Error(), "client didn't provide a certificate"):
		return RefusedNoClientCertificate
	case errors.As(err, &unknown):
		return RefusedUnknownAuthority
	case errors.As(err, &invalid), errors.As(err, &hostname):
		return RefusedBadCertificate
	case errors.As(err, &rec):
		return RefusedNotTLS
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return RefusedConnectionClosed
	}
	return RefusedHandshake
}
