package accesslog_test

import (
	"testing"

	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/meshmetrics/meshmetrics/adapter/mixertest/accesslog"
)

func TestRealisticMessagesAndV2(t *testing.T) {
	msgs, err := accesslog.RealisticMessages(3, 25)
	require.NoError(t, err)
	require.Len(t, msgs, 3)
	var m alsv3.StreamAccessLogsMessage
	require.NoError(t, proto.Unmarshal(msgs[1], &m))
	entries := m.GetHttpLogs().GetLogEntry()
	require.Len(t, entries, 25)
	require.Equal(t, "/v1/damage?analytic=1", entries[0].GetRequest().GetPath(), "entry 25 is the 26th of the series")
	require.Equal(t, "inbound|9080|http|ratings.default.svc.cluster.local", entries[0].GetCommonProperties().GetUpstreamCluster())
	require.Greater(t, len(msgs[0])/25, 400, "entries are about 600 bytes, as a sidecar's")

	v2, err := accesslog.V2(&m)
	require.NoError(t, err)
	require.Len(t, v2.GetHttpLogs().GetLogEntry(), 25)
	e := v2.GetHttpLogs().GetLogEntry()[3]
	require.Equal(t, entries[3].GetRequest().GetPath(), e.GetRequest().GetPath())
	require.Equal(t, entries[3].GetResponse().GetResponseCode().GetValue(), e.GetResponse().GetResponseCode().GetValue())
	require.Equal(t, entries[3].GetCommonProperties().GetTlsProperties().GetPeerCertificateProperties().GetSubjectAltName()[0].GetUri(),
		e.GetCommonProperties().GetTlsProperties().GetPeerCertificateProperties().GetSubjectAltName()[0].GetUri())
}
