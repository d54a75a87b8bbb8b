package faults_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/grpcserver"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/tlstest"
)

// TestTLSRefusalStormIsCountedAndLoggedOnce is the issue's seventh finding
// as an attack: 200 failed handshakes of each kind (no client certificate,
// a certificate of another CA, a SPIFFE ID outside the allow-list, plain
// text on the TLS port, TCP probes) against mutual TLS with an allow-list,
// 1,000 in all, from 20 clients at once, while Mixer keeps calling. Each
// refusal is counted by reason, exactly; the log holds one line per reason
// (rate-limited by reason, whatever the peers), none for probes; no
// descriptor is left behind; every Mixer call gets through.
func TestTLSRefusalStormIsCountedAndLoggedOnce(t *testing.T) {
	const (
		each    = 200
		clients = 20
	)
	ca := tlstest.NewCA(t, "mesh")
	otherCA := tlstest.NewCA(t, "elsewhere")
	serverLeaf := ca.Issue(t, "adapter", tlstest.LeafOptions{Server: true, DNSNames: []string{"localhost"}, URIs: []string{tlstest.MixerSPIFFE}})
	mixer := ca.Issue(t, "mixer", tlstest.LeafOptions{Client: true, URIs: []string{tlstest.MixerSPIFFE}})
	stranger := otherCA.Issue(t, "stranger", tlstest.LeafOptions{Client: true, URIs: []string{tlstest.MixerSPIFFE}})
	intruder := ca.Issue(t, "intruder", tlstest.LeafOptions{Client: true, URIs: []string{"spiffe://cluster.local/ns/default/sa/intruder"}})
	h := start(t, setup{kind: rwKind, tweak: func(o *adapter.Options) {
		o.TLS = grpcserver.TLSFiles{Cert: serverLeaf.CertFile, Key: serverLeaf.KeyFile, ClientCA: ca.File}
		o.AllowedSPIFFEIDs = []string{tlstest.MixerSPIFFE}
	}})
	addr := h.a.GRPCAddr()
	handshake := func(cert *tls.Certificate) {
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}
		if cert != nil {
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		c, err := tls.Dial("tcp", addr, cfg)
		if err == nil {
			// TLS 1.3: the client learns of the refusal on its first read.
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Read(make([]byte, 1))
			c.Close()
		}
	}
	attacks := []struct {
		reason string
		do     func()
		logged bool
	}{
		{grpcserver.RefusedNoClientCertificate, func() { handshake(nil) }, true},
		{grpcserver.RefusedUnknownAuthority, func() { handshake(&stranger.TLS) }, true},
		{grpcserver.RefusedSPIFFEID, func() { handshake(&intruder.TLS) }, true},
		{grpcserver.RefusedNotTLS, func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Read(make([]byte, 64))
		}, true},
		{grpcserver.RefusedConnectionClosed, func() {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
			}
		}, false},
	}
	fdsBefore := openFiles(t, os.Getpid())

	mixerConn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{mixer.TLS}, RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12})),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(mixerpb.Codec{})))
	require.NoError(t, err)
	defer mixerConn.Close()
	cfg := h.params()
	stop := make(chan struct{})
	var mixerCalls, mixerErrors int
	mixerDone := make(chan struct{})
	go func() {
		defer close(mixerDone)
		client := metricpb.NewHandleMetricServiceClient(mixerConn)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, err := client.HandleMetric(context.Background(), &metricpb.HandleMetricRequest{AdapterConfig: cfg, Instances: instances(1, paths, mixerCalls)})
			mixerCalls++
			if err != nil {
				mixerErrors++
			}
		}
	}()

	work := make(chan func())
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for do := range work {
				do()
			}
		}()
	}
	for i := range each * len(attacks) {
		work <- attacks[i%len(attacks)].do
	}
	close(work)
	wg.Wait()
	close(stop)
	<-mixerDone

	refused := func() map[string]float64 { return h.counters("meshmetrics_auth_refused_total", "reason") }
	want := map[string]float64{}
	for _, a := range attacks {
		want[a.reason] = each
	}
	require.Eventually(t, func() bool { return fmt.Sprint(refused()) == fmt.Sprint(want) }, 10*time.Second, 10*time.Millisecond,
		"every refusal counted by reason: %v", refused())
	logs := h.logs.String()
	for _, a := range attacks {
		lines := strings.Count(logs, "reason="+a.reason)
		if a.logged {
			require.Equal(t, 1, lines, "%s: logged once (rate-limited by reason)", a.reason)
		} else {
			require.Zero(t, lines, "%s: probes are not worth a warning", a.reason)
		}
	}
	require.Positive(t, mixerCalls)
	require.Zero(t, mixerErrors, "Mixer's calls get through the storm")
	require.Equal(t, float64(mixerCalls), h.counters("meshmetrics_instances_accepted_total", "")[""])
	require.Eventually(t, func() bool { return openFiles(t, os.Getpid()) <= fdsBefore+2 }, 10*time.Second, 20*time.Millisecond,
		"no descriptor left behind: %d before, %d now", fdsBefore, openFiles(t, os.Getpid()))
	t.Logf("figures %s: %d refused handshakes from %d clients, %d log lines; %d Mixer calls meanwhile, all OK",
		t.Name(), each*len(attacks), clients, strings.Count(logs, "TLS handshake refused"), mixerCalls)
}
