package member_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// publishInfo signs info as cluster's record version v with cred, as a
// control plane does, and publishes it to the hub.
func publishInfo(ctx context.Context, t *testing.T, hub hubpb.HubClient, cred *trust.Credential, cluster string, v *registry.Version, info *registry.ClusterInfo) error {
	t.Helper()
	signer := registry.Signer{Cluster: cluster, Key: cred.Key(), Cert: cred.Leaf().Raw}
	sr, err := signer.Sign(&registry.Record{
		Cluster: cluster, Key: registry.InfoKey, Version: v, SignedAt: time.Now().UnixNano(),
		Body: &registrypb.Record_Info{Info: info},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = hub.Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{sr}})
	return err
}

// hubInfo returns the version and ClusterInfo of cluster's info record as
// the hub holds it, fetched with the admin credential.
func hubInfo(t *testing.T, reg hubpb.RegistryClient, cluster string) (*registry.Version, *registry.ClusterInfo) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := reg.Fetch(ctx, &hubpb.FetchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sr := range resp.GetRecords() {
		rec := new(registry.Record)
		if err := proto.Unmarshal(sr.GetRecord(), rec); err != nil {
			t.Fatal(err)
		}
		if rec.GetCluster() == cluster && rec.GetKey() == registry.InfoKey {
			return rec.GetVersion(), rec.GetInfo()
		}
	}
	return nil, nil
}

// hubStored returns the hub's stored record of key in cluster's slice. The
// running hub holds its bbolt file's lock, so this reads a copy: between
// two writes the file is consistent, and a write is done before the hub
// answers the call that caused it.
func hubStored(t *testing.T, tm *fedtest.Mesh, cluster, key string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(tm.Dir, "hub", hub.StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), hub.StoreFile)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v, err := st.Get(store.BucketRecords, store.RecordKey(cluster, key))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestTrustBadBundlesAreRefused(t *testing.T) {
	t.Parallel()
	tm := newMesh(t, testTimers)
	ms := federate(t, tm, nil, "east", "west")
	east, west := ms["east"], ms["west"]
	ctx := deadlineContext(t, 30*time.Second)

	// Rotate east's root part way, so that the hub holds sequence 2 and
	// east's first bundle is a real, older one.
	oldBundle := east.Member.Authority().Bundle()
	oldJSON, err := oldBundle.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	stream, err := controlPlaneWithFiles(t, east.Member.Addr(), east.Dir).RotateRoot(ctx, &hubpb.RotateRootRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := stream.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	admin := tm.AdminRegistry()
	fedtest.Eventually(t, 10*time.Second, "the hub holds east's switched ClusterInfo", func() bool {
		v, info := hubInfo(t, admin, "east")
		return info != nil && info.GetRotationPhase() == trust.PhaseSwitched && registry.Compare(v, east.Member.Version("east")) == 0
	})
	held, err := tm.Hub.Bundles().GetBundleForTrustDomain(eastTD)
	if err != nil {
		t.Fatal(err)
	}
	held = held.Clone()
	if seq, _ := held.SequenceNumber(); seq != 2 {
		t.Fatalf("hub holds east's bundle at sequence %d, want 2", seq)
	}
	heldWest, err := tm.Hub.Bundles().GetBundleForTrustDomain(westTD)
	if err != nil {
		t.Fatal(err)
	}
	heldWest = heldWest.Clone()
	version := hubSlices(t, admin)["east"]
	_, entryInfo := hubInfo(t, admin, "east")
	stored := hubStored(t, tm, "east", registry.InfoKey)
	if stored == nil {
		t.Fatal("the hub stores no ClusterInfo of east")
	}
	westJSON, err := heldWest.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// Same sequence as held, but a different bundle: only the old root.
	sameSeq := spiffebundle.New(eastTD)
	sameSeq.SetX509Authorities(oldBundle.X509Authorities())
	sameSeq.SetSequenceNumber(2)
	sameSeqJSON, err := sameSeq.Marshal()
	if err != nil {
		t.Fatal(err)
	}

	// East's own credential, as a control plane publishes with it.
	credPath, caPath := filepath.Join(east.Dir, membership.CredentialFile), filepath.Join(east.Dir, membership.CAFile)
	conn, err := membership.Dial(tm.HubAddr, credPath, caPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	hub := hubpb.NewHubClient(conn)
	cred, err := trust.LoadCredential(credPath)
	if err != nil {
		t.Fatal(err)
	}
	next := &registry.Version{Incarnation: version.GetIncarnation(), Counter: version.GetCounter() + 1}
	for _, c := range []struct {
		name string
		edit func(*registry.ClusterInfo)
		msg  string
	}{
		{"malformed bundle JSON", func(i *registry.ClusterInfo) { i.Bundle = []byte(`{"keys": [{"kty": "EC",`) }, "bundle for east.shop"},
		{"west's trust domain", func(i *registry.ClusterInfo) {
			i.TrustDomain, i.Bundle, i.BundleSequence = "west.shop", westJSON, 1
		}, `may publish only trust domain "east.shop", not "west.shop"`},
		{"sequence regression", func(i *registry.ClusterInfo) { i.Bundle, i.BundleSequence = oldJSON, 1 }, "sequence is not newer"},
		{"same sequence, other roots", func(i *registry.ClusterInfo) { i.Bundle = sameSeqJSON }, "sequence is not newer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			info := proto.Clone(entryInfo).(*registry.ClusterInfo)
			c.edit(info)
			err := publishInfo(ctx, t, hub, cred, "east", next, info)
			st := wantCode(t, err, c.name, codes.InvalidArgument, codes.PermissionDenied)
			if !strings.Contains(st.Message(), c.msg) {
				t.Fatalf("message %q does not say %q", st.Message(), c.msg)
			}

			for td, want := range map[spiffeid.TrustDomain]*spiffebundle.Bundle{eastTD: held, westTD: heldWest} {
				got, err := tm.Hub.Bundles().GetBundleForTrustDomain(td)
				if err != nil || !got.Equal(want) {
					t.Fatalf("hub's bundle of %s changed (%v)", td, err)
				}
			}
			if got := hubSlices(t, admin)["east"]; registry.Compare(got, version) != 0 {
				t.Fatalf("hub holds east at %s, want %s", registry.FormatVersion(got), registry.FormatVersion(version))
			}
			if _, got := hubInfo(t, admin, "east"); !proto.Equal(got, entryInfo) {
				t.Fatalf("hub's ClusterInfo of east changed to %v", got)
			}
			if got := hubStored(t, tm, "east", registry.InfoKey); !bytes.Equal(got, stored) {
				t.Fatal("hub's stored ClusterInfo of east changed")
			}
			if got, err := west.Member.Bundles().GetBundleForTrustDomain(eastTD); err != nil || !got.Equal(held) {
				t.Fatalf("west's bundle of east changed (%v)", err)
			}
		})
	}

	// The refusals left the way open: east's next real update lands.
	east.Update(t, fedtest.CoffeeService("east", "order", 1, 18080))
	fedtest.Eventually(t, 10*time.Second, "east's next update at the hub", func() bool {
		return registry.Compare(hubSlices(t, admin)["east"], east.Member.Version("east")) == 0
	})
}
