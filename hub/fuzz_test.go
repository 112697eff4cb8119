package hub

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

func FuzzDecodeDigest(f *testing.F) {
	for _, d := range []Digest{
		{Name: "east", Cluster: "east", Incarnation: 1732000000000000000, Counter: 42, BundleSequence: 3, API: "10.0.0.1:7443", Gateway: "35.1.2.3:15443"},
		{Name: "hub", API: "hub:7443"},
	} {
		f.Add(d.encode())
	}
	for _, s := range []string{
		`{}`, `{"n":""}`, `{"n":"x","c":"Not-A-Name"}`, `{"n":"x","i":-1}`, `{"n":"x","v":1e30}`,
		`{"n":"x","n":"y"}`, `{"N":"x","C":"east"}`, `null`, `[]`, `"n"`, `{"n":"\ud800"}`,
		`{"n":"` + strings.Repeat("x", maxDigestBytes) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDigest(b)
		if err != nil {
			return
		}
		if len(b) > maxDigestBytes {
			t.Fatalf("accepted a digest of %d bytes", len(b))
		}
		if d.Name == "" {
			t.Fatal("accepted a digest without a member name")
		}
		if d.Cluster != "" {
			if err := registry.ValidClusterName(d.Cluster); err != nil {
				t.Fatalf("accepted cluster %q: %v", d.Cluster, err)
			}
		}
		// The version is what peers compare: it must order against itself.
		if registry.Compare(d.Version(), d.Version()) != 0 {
			t.Fatalf("version %v is not equal to itself", d.Version())
		}
		// A decoded digest is re-encoded when relayed in push/pull state;
		// whatever fits decodes to the same digest.
		enc := d.encode()
		if len(enc) > maxDigestBytes {
			return
		}
		again, err := DecodeDigest(enc)
		if err != nil {
			t.Fatalf("re-encoded digest %s does not decode: %v", enc, err)
		}
		if again != d {
			t.Fatalf("round trip changed the digest:\n got %+v\nwant %+v", again, d)
		}
		// A queued broadcast of it is replaced by the same digest.
		if !digestBroadcast(enc).Invalidates(digestBroadcast(b)) {
			t.Fatalf("broadcast %s does not replace itself", b)
		}
	})
}
