package membership

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/federate/federate/registry"
)

// tokenPrefix versions the token format.
const tokenPrefix = "fedjoin1"

// maxTokenLen bounds what ParseToken reads.
const maxTokenLen = 2048

// DefaultTokenTTL is how long a join token is valid unless told otherwise.
const DefaultTokenTTL = time.Hour

// Token is a one-time join token. Its public part tells the joining cluster
// where the hub is and which CA to pin; the secret proves the token was
// minted by the hub.
type Token struct {
	ID      string    `json:"id"`
	Cluster string    `json:"cluster"`
	Hub     string    `json:"hub"`
	CA      string    `json:"ca"` // trust.Fingerprint of the hub CA
	Expires time.Time `json:"exp"`
	Secret  []byte    `json:"-"`
}

// NewToken mints a token with a random id and secret.
func NewToken(cluster, hubAddr, caFingerprint string, expires time.Time) (*Token, error) {
	buf := make([]byte, 8+32)
	if _, err := rand.Read(buf); err != nil {
		return nil, err
	}
	return &Token{
		ID:      base64.RawURLEncoding.EncodeToString(buf[:8]),
		Cluster: cluster,
		Hub:     hubAddr,
		CA:      caFingerprint,
		Expires: expires.UTC().Truncate(time.Second),
		Secret:  buf[8:],
	}, nil
}

// String encodes the token as fedjoin1.<claims>.<secret>.
func (t *Token) String() string {
	claims, _ := json.Marshal(t)
	return tokenPrefix + "." + base64.RawURLEncoding.EncodeToString(claims) + "." + base64.RawURLEncoding.EncodeToString(t.Secret)
}

// ParseToken decodes a token string. It checks the form only; the hub checks
// that the token is genuine, unused and unexpired.
func ParseToken(s string) (*Token, error) {
	s = strings.TrimSpace(s)
	if len(s) > maxTokenLen {
		return nil, fmt.Errorf("%w: %d characters is longer than any token", ErrTokenMalformed, len(s))
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 || parts[0] != tokenPrefix {
		return nil, fmt.Errorf("%w: want %s.<claims>.<secret>, as printed by 'federate token create'", ErrTokenMalformed, tokenPrefix)
	}
	claims, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrTokenMalformed, err)
	}
	t := new(Token)
	if err := json.Unmarshal(claims, t); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrTokenMalformed, err)
	}
	if t.Secret, err = base64.RawURLEncoding.DecodeString(parts[2]); err != nil || len(t.Secret) != 32 {
		return nil, fmt.Errorf("%w: the secret part is not 32 bytes of base64", ErrTokenMalformed)
	}
	if t.ID == "" || t.Hub == "" || !strings.HasPrefix(t.CA, "sha256:") {
		return nil, fmt.Errorf("%w: missing id, hub address or CA fingerprint", ErrTokenMalformed)
	}
	if err := registry.ValidClusterName(t.Cluster); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTokenMalformed, err)
	}
	return t, nil
}
