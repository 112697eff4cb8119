package registry_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
)

// verifyFixture is a mesh CA with the credentials a record may claim to be
// signed by. Only east's cluster credential may sign east's records.
type verifyFixture struct {
	verifier *registry.Verifier
	// keys and leaves by signer choice: 1 east's cluster credential, 2 the
	// hub's credential from the same CA, 3 an east credential from an
	// impostor CA of the same trust domain.
	keys   [4]*ecdsa.PrivateKey
	leaves [4][]byte
}

const (
	fromEast = 1
	fromHub  = 2
	fromFake = 3
)

var verifyFixtureOnce = sync.OnceValues(newVerifyFixture)

func newVerifyFixture() (*verifyFixture, error) {
	td := spiffeid.RequireTrustDomainFromString("shop")
	now := time.Now()
	ca, err := trust.NewCA(td, now)
	if err != nil {
		return nil, err
	}
	fake, err := trust.NewCA(td, now)
	if err != nil {
		return nil, err
	}
	fx := &verifyFixture{verifier: registry.NewVerifier("shop", []*x509.Certificate{ca.Cert})}
	for i, c := range []struct {
		ca   *trust.CA
		path string
	}{fromEast: {ca, "/cluster/east"}, fromHub: {ca, "/hub"}, fromFake: {fake, "/cluster/east"}} {
		if c.ca == nil {
			continue
		}
		key, err := trust.GenerateKey()
		if err != nil {
			return nil, err
		}
		leaf, err := c.ca.Issue(spiffeid.RequireFromPath(td, c.path), key.Public(), time.Hour, now)
		if err != nil {
			return nil, err
		}
		fx.keys[i], fx.leaves[i] = key, leaf.Raw
	}
	return fx, nil
}

func fixture(tb testing.TB) *verifyFixture {
	tb.Helper()
	fx, err := verifyFixtureOnce()
	if err != nil {
		tb.Fatal(err)
	}
	return fx
}

// signedRecord builds what travels: the low two bits of mode pick the
// signer certificate (0: the signer bytes as given), the next two the key
// that signs the record (0: the signature as given).
func (fx *verifyFixture) signedRecord(tb testing.TB, record, sig, signer []byte, mode uint8) *registrypb.SignedRecord {
	tb.Helper()
	if c := mode & 3; c != 0 {
		signer = fx.leaves[c]
	}
	if k := mode >> 2 & 3; k != 0 {
		digest := sha256.Sum256(record)
		var err error
		if sig, err = ecdsa.SignASN1(rand.Reader, fx.keys[k], digest[:]); err != nil {
			tb.Fatal(err)
		}
	}
	return &registrypb.SignedRecord{Record: record, Signature: sig, Signer: signer}
}

// check verifies sr and fails the test if the verdict breaks an invariant:
// every refusal wraps a registry error, and nothing is accepted unless
// east's CA-issued key signed it and it is a valid record of east.
func (fx *verifyFixture) check(tb testing.TB, sr *registrypb.SignedRecord) error {
	tb.Helper()
	record, sig, signer := sr.GetRecord(), sr.GetSignature(), sr.GetSigner()
	rec, err := fx.verifier.Verify(sr)
	if err != nil {
		if !errors.Is(err, registry.ErrBadSignature) && !errors.Is(err, registry.ErrWrongOwner) &&
			!errors.Is(err, registry.ErrInvalid) && !errors.Is(err, registry.ErrTooLarge) {
			tb.Fatalf("Verify error %v wraps no registry error", err)
		}
		return err
	}
	if !bytes.Equal(signer, fx.leaves[fromEast]) {
		tb.Fatalf("accepted a record whose signer is not east's CA-issued certificate")
	}
	digest := sha256.Sum256(record)
	if !ecdsa.VerifyASN1(&fx.keys[fromEast].PublicKey, digest[:], sig) {
		tb.Fatalf("accepted a record east's key did not sign")
	}
	if rec.GetCluster() != "east" {
		tb.Fatalf("accepted a record of %q signed by east", rec.GetCluster())
	}
	if rec.GetVersion().GetIncarnation() == 0 {
		tb.Fatal("accepted a record without an incarnation")
	}
	decoded := new(registry.Record)
	if err := proto.Unmarshal(record, decoded); err != nil || !proto.Equal(decoded, rec) {
		tb.Fatalf("Verify returned %v, which is not what was signed (%v)", rec, err)
	}
	return nil
}

func encodeRecord(tb testing.TB, rec *registry.Record) []byte {
	tb.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func infoRecord(cluster string, incarnation uint64) *registry.Record {
	return &registry.Record{
		Cluster: cluster, Version: &registry.Version{Incarnation: incarnation, Counter: 1}, SignedAt: time.Now().UnixNano(),
		Body: &registrypb.Record_Info{Info: &registry.ClusterInfo{Network: "net-" + cluster}},
	}
}

func orderRecord(cluster, key, hostname string) *registry.Record {
	return &registry.Record{
		Cluster: cluster, Key: key, Version: &registry.Version{Incarnation: 5, Counter: 2}, SignedAt: time.Now().UnixNano(),
		Body: &registrypb.Record_Service{Service: &registry.Service{
			Hostname: hostname, Endpoints: []*registry.Endpoint{{Address: "10.0.0.1", Ports: map[string]uint32{"http": 8080}}},
		}},
	}
}

type verifyCase struct {
	name    string
	record  *registry.Record
	raw     []byte // used when record is nil
	sig     []byte
	signer  []byte
	mode    uint8
	wantErr error
}

func verifyCases() []verifyCase {
	const host = "order.shop.svc.cluster.local"
	east := uint8(fromEast | fromEast<<2)
	return []verifyCase{
		{name: "east's info signed by east", record: infoRecord("east", 1), mode: east},
		{name: "east's service signed by east", record: orderRecord("east", host, host), mode: east},
		{name: "east's tombstone signed by east", record: &registry.Record{Cluster: "east", Key: host, Deleted: true, Version: &registry.Version{Incarnation: 2}, SignedAt: time.Now().UnixNano()}, mode: east},
		{name: "west's record signed by east", record: infoRecord("west", 1), mode: east, wantErr: registry.ErrWrongOwner},
		{name: "no signature", record: infoRecord("east", 1), mode: fromEast, wantErr: registry.ErrBadSignature},
		{name: "signature of another key", record: infoRecord("east", 1), mode: fromEast | fromFake<<2, wantErr: registry.ErrBadSignature},
		{name: "signed by the hub", record: infoRecord("east", 1), mode: fromHub | fromHub<<2, wantErr: registry.ErrBadSignature},
		{name: "signed by an impostor CA", record: infoRecord("east", 1), mode: fromFake | fromFake<<2, wantErr: registry.ErrBadSignature},
		{name: "signer is not a certificate", record: infoRecord("east", 1), signer: []byte("not DER"), mode: fromEast << 2, wantErr: registry.ErrBadSignature},
		{name: "no incarnation", record: infoRecord("east", 0), mode: east, wantErr: registry.ErrInvalid},
		{name: "service under another key", record: orderRecord("east", "other.shop", host), mode: east, wantErr: registry.ErrInvalid},
		{name: "info record without info", record: &registry.Record{Cluster: "east", Version: &registry.Version{Incarnation: 1}, SignedAt: time.Now().UnixNano()}, mode: east, wantErr: registry.ErrInvalid},
		{name: "signed long before the credential", record: func() *registry.Record {
			r := infoRecord("east", 1)
			r.SignedAt = time.Now().Add(-24 * time.Hour).UnixNano()
			return r
		}(), mode: east, wantErr: registry.ErrBadSignature},
		{name: "not a record", raw: []byte{0xff, 0xff, 0xff}, mode: east, wantErr: registry.ErrInvalid},
	}
}

func TestVerifyRecord(t *testing.T) {
	fx := fixture(t)
	for _, tc := range verifyCases() {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw
			if tc.record != nil {
				raw = encodeRecord(t, tc.record)
			}
			err := fx.check(t, fx.signedRecord(t, raw, tc.sig, tc.signer, tc.mode))
			t.Logf("Verify: %v", err)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("Verify: %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func FuzzVerifyRecord(f *testing.F) {
	fx := fixture(f)
	for _, tc := range verifyCases() {
		raw := tc.raw
		if tc.record != nil {
			raw = encodeRecord(f, tc.record)
		}
		f.Add(raw, tc.sig, tc.signer, tc.mode)
	}
	// A complete record as it travels, signature and certificate included.
	sr := fx.signedRecord(f, encodeRecord(f, infoRecord("east", 3)), nil, nil, fromEast|fromEast<<2)
	f.Add(sr.GetRecord(), sr.GetSignature(), sr.GetSigner(), uint8(0))
	f.Fuzz(func(t *testing.T, record, sig, signer []byte, mode uint8) {
		fx.check(t, fx.signedRecord(t, record, sig, signer, mode))
	})
}

func TestRecordSizeLimit(t *testing.T) {
	fx := fixture(t)
	limit := strconv.Itoa(registry.MaxRecordBytes)
	big := orderRecord("east", "big.shop", "big.shop")
	big.GetService().Endpoints[0].Labels = map[string]string{"padding": strings.Repeat("x", registry.MaxRecordBytes)}
	signer := registry.Signer{Cluster: "east", Key: fx.keys[fromEast], Cert: fx.leaves[fromEast]}

	_, err := signer.Sign(big)
	if !errors.Is(err, registry.ErrTooLarge) || !strings.Contains(err.Error(), limit) {
		t.Fatalf("signing an oversized service: %v, want %v naming the limit %s", err, registry.ErrTooLarge, limit)
	}
	// A record signed by other means is refused by size before anything else.
	sr := fx.signedRecord(t, encodeRecord(t, big), nil, nil, fromEast|fromEast<<2)
	err = fx.check(t, sr)
	if !errors.Is(err, registry.ErrTooLarge) || !strings.Contains(err.Error(), limit) {
		t.Fatalf("verifying an oversized record: %v, want %v naming the limit %s", err, registry.ErrTooLarge, limit)
	}
	// A service below the limit signs and verifies.
	big.GetService().Endpoints[0].Labels["padding"] = strings.Repeat("x", registry.MaxRecordBytes-1024)
	sr, err = signer.Sign(big)
	if err != nil {
		t.Fatalf("signing a service below the limit: %v", err)
	}
	if err := fx.check(t, sr); err != nil {
		t.Fatalf("verifying a service below the limit: %v", err)
	}
}
