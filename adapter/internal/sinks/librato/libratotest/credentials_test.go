package libratotest

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSetCredentialsRotatesTheAcceptedToken(t *testing.T) {
	s := newServer(t)
	s.SetCredentials("ops@example.com", "new-token")
	tests := []struct {
		name       string
		user, pass string
		wantStatus int
		wantAuth   AuthForm
	}{
		{"old token refused", DefaultEmail, DefaultToken, http.StatusUnauthorized, AuthRejected},
		{"new librato form", "ops@example.com", "new-token", http.StatusAccepted, AuthLibrato},
		{"new appoptics form", "new-token", "", http.StatusAccepted, AuthAppOptics},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := do(t, s, call{body: oneValid, user: tc.user, pass: tc.pass})
			require.Equal(t, tc.wantStatus, resp.StatusCode)
			last, ok := s.LastRequest()
			require.True(t, ok)
			require.Equal(t, tc.wantAuth, last.Auth)
		})
	}
}
