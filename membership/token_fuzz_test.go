package membership

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/registry"
)

func FuzzParseToken(f *testing.F) {
	secret := bytes.Repeat([]byte{7}, 32)
	good := &Token{
		ID: "AAECAwQFBgc", Cluster: "east", Hub: "hub.example:7443",
		CA:      "sha256:" + strings.Repeat("ab", 32),
		Expires: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), Secret: secret,
	}
	claims := func(json string) string {
		return tokenPrefix + "." + base64.RawURLEncoding.EncodeToString([]byte(json)) + "." + base64.RawURLEncoding.EncodeToString(secret)
	}
	for _, s := range []string{
		good.String(),
		"  " + good.String() + "\n",
		claims(`{"id":"x","cluster":"west","hub":"h:1","ca":"sha256:00","exp":"2030-01-02T03:04:05+02:00"}`),
		claims(`{"ID":"x","Cluster":"west","HUB":"h:1","ca":"sha256:","exp":"0001-01-01T00:00:00Z"}`),
		claims(`{"id":"x","cluster":"West","hub":"h:1","ca":"sha256:00"}`),
		claims(`{"id":"x","cluster":"west","hub":"h:1","ca":"md5:00"}`),
		claims(`{"id":"x","cluster":"west","hub":"h:1","ca":"sha256:00","exp":"not a time"}`),
		claims(`null`),
		claims(`[]`),
		tokenPrefix + ".e30.",
		tokenPrefix + "..",
		"fedjoin2.a.b",
		strings.Repeat("a", maxTokenLen+1),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrTokenMalformed) {
				t.Fatalf("ParseToken error %v does not wrap ErrTokenMalformed", err)
			}
			return
		}
		if len(tok.Secret) != 32 || tok.ID == "" || tok.Hub == "" || !strings.HasPrefix(tok.CA, "sha256:") {
			t.Fatalf("ParseToken accepted an incomplete token: %+v", tok)
		}
		if err := registry.ValidClusterName(tok.Cluster); err != nil {
			t.Fatalf("ParseToken accepted cluster name %q: %v", tok.Cluster, err)
		}
		// Re-encoding escapes some characters, so it can outgrow the limit;
		// whatever fits parses back to the same token.
		enc := tok.String()
		if len(enc) > maxTokenLen {
			return
		}
		again, err := ParseToken(enc)
		if err != nil {
			t.Fatalf("re-encoded token %q does not parse: %v", enc, err)
		}
		if again.ID != tok.ID || again.Cluster != tok.Cluster || again.Hub != tok.Hub || again.CA != tok.CA ||
			!again.Expires.Equal(tok.Expires) || !bytes.Equal(again.Secret, tok.Secret) {
			t.Fatalf("round trip changed the token:\n got %+v\nwant %+v", again, tok)
		}
		if again.String() != enc {
			t.Fatalf("encoding is not stable: %q then %q", enc, again.String())
		}
	})
}
