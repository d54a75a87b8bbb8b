package config

import (
	"errors"
	"net/url"
	"path"
	"strings"
)

// RedactedURLValue replaces a credential in a URL shown (the user info's
// password, as net/url writes it, and query values).
const RedactedURLValue = "xxxxx"

// RedactURL is raw as it may be shown (sink names and labels, logs,
// errors, /debug/config): the user info's password and the values of query
// parameters that look like credentials (?api_key=, ?access_token=,
// ?password=, ?sig=...) replaced. A URL that does not parse is not shown.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// A gRPC target (host:port) is not a URL, and carries no
		// credential unless it has user info or a query.
		if !strings.ContainsAny(raw, "/@?#") {
			return raw
		}
		return "invalid-url"
	}
	return redactedURL(u).String()
}

func redactedURL(u *url.URL) *url.URL {
	out := *u
	if _, ok := out.User.Password(); ok {
		out.User = url.UserPassword(out.User.Username(), RedactedURLValue)
	}
	if out.RawQuery != "" {
		q, err := url.ParseQuery(out.RawQuery)
		if err != nil {
			out.RawQuery = RedactedURLValue
		} else {
			changed := false
			for k, vs := range q {
				if SensitiveName(k) {
					for i := range vs {
						vs[i] = RedactedURLValue
					}
					changed = true
				}
			}
			if changed {
				out.RawQuery = q.Encode()
			}
		}
	}
	return &out
}

// SensitiveName says whether a query parameter or header name may carry a
// credential: its value is then never shown.
func SensitiveName(name string) bool {
	n := strings.ToLower(name)
	switch n {
	case "authorization", "proxy-authorization", "cookie", "sig", "signature", "pwd", "passwd":
		return true
	}
	for _, w := range []string{"token", "key", "secret", "password", "auth", "credential", "session", "signature"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// RedactURLError replaces the URL of a *url.Error (what net/http returns,
// and prints with the whole URL) with its redacted form; other errors are
// returned as they are.
func RedactURLError(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	return &url.Error{Op: ue.Op, URL: RedactURL(ue.URL), Err: ue.Err}
}

// JoinURLPath appends elem to the path of base, keeping its query string
// where it belongs ("https://h/x?k=v" + "/v1/m" is "https://h/x/v1/m?k=v").
func JoinURLPath(base, elem string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u.Path = path.Join("/", u.Path, elem)
	u.RawPath = ""
	return u.String(), nil
}
