package config_test

import (
	"errors"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/config"
)

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://metrics-api.librato.com", "https://metrics-api.librato.com"},
		{"https://bob:pw@h/api/v1/write", "https://bob:xxxxx@h/api/v1/write"},
		{"https://h/?api_key=K3Y", "https://h/?api_key=xxxxx"},
		{"https://h/write?access_token=T0K&db=prod", "https://h/write?access_token=xxxxx&db=prod"},
		{"https://h/w?X-Amz-Signature=abc&X-Amz-Credential=def&region=eu", "https://h/w?X-Amz-Credential=xxxxx&X-Amz-Signature=xxxxx&region=eu"},
		{"https://h/w?sig=1&password=2&Auth=3", "https://h/w?Auth=xxxxx&password=xxxxx&sig=xxxxx"},
		{"https://h/w?db=prod", "https://h/w?db=prod"},
		{"https://h/w?%zz", "https://h/w?xxxxx"},
		{"::not a url", "::not a url"},
		{"otel-collector:4317", "otel-collector:4317"},
		{"127.0.0.1:4317", "127.0.0.1:4317"},
		{"::/?api_key=K", "invalid-url"},
	}
	for _, tc := range tests {
		require.Equal(t, tc.want, config.RedactURL(tc.in), tc.in)
	}
}

func TestRedactURLError(t *testing.T) {
	err := &url.Error{Op: "Post", URL: "https://h/v1/measurements?api_key=K3Y", Err: errors.New("connection refused")}
	got := config.RedactURLError(err)
	require.Equal(t, `Post "https://h/v1/measurements?api_key=xxxxx": connection refused`, got.Error())
	other := errors.New("plain")
	require.Equal(t, other, config.RedactURLError(other))
}

func TestJoinURLPathKeepsTheQuery(t *testing.T) {
	tests := []struct{ base, elem, want string }{
		{"https://metrics-api.librato.com", "/v1/measurements", "https://metrics-api.librato.com/v1/measurements"},
		{"https://h/", "/v1/measurements", "https://h/v1/measurements"},
		{"https://h/?api_key=K", "/v1/measurements", "https://h/v1/measurements?api_key=K"},
		{"https://h/proxy/librato?x=1&y=2", "/v1/metrics", "https://h/proxy/librato/v1/metrics?x=1&y=2"},
	}
	for _, tc := range tests {
		got, err := config.JoinURLPath(tc.base, tc.elem)
		require.NoError(t, err)
		require.Equal(t, tc.want, got)
	}
}
