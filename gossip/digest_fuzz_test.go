package gossip

import (
	"cmp"
	"strings"
	"testing"

	"github.com/federate/federate/registry"
)

func FuzzDecodeDigest(f *testing.F) {
	for _, d := range []Digest{
		{Name: "east-1a2b3c", Cluster: "east", Incarnation: 1732000000000000000, Counter: 42, BundleSequence: 3, API: "10.0.0.1:7443", Gateway: "35.1.2.3:15443"},
		{Name: "hub-1a2b3c", API: "hub:7443"},
		{Name: "east-1a2b3c", Cluster: "west"}, {Name: "us-east-1a2b3c", Cluster: "us-east"},
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
		// The node name belongs to the cluster (or a hub) it claims.
		if owner := cmp.Or(d.Cluster, hubNodeBase); memberBase(d.Name) != owner {
			t.Fatalf("accepted node %q for cluster %q", d.Name, d.Cluster)
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
		// A queued broadcast of it is replaced by the same member's next.
		if !(digestBroadcast{name: again.Name, msg: enc}).Invalidates(digestBroadcast{name: d.Name, msg: b}) {
			t.Fatalf("broadcast %s does not replace itself", b)
		}
	})
}
