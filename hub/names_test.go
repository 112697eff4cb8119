package hub

import (
	"slices"
	"strings"
	"testing"

	"github.com/federate/federate/trust"
)

func TestCredentialNames(t *testing.T) {
	key, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	many := make([]string, 17)
	for i := range many {
		many[i] = string(rune('a'+i)) + ".example"
	}
	cases := []struct {
		name      string
		requested []string
		want      []string
		wantErr   string
	}{
		{"none", nil, []string{"west.shop", "controlplane.west.federate.internal"}, ""},
		{"names and addresses", []string{"cp.west.example", "10.0.0.5", "cp.west.example"},
			[]string{"west.shop", "controlplane.west.federate.internal", "cp.west.example", "10.0.0.5"}, ""},
		{"its own internal name", []string{"controlplane.west.federate.internal"}, []string{"west.shop", "controlplane.west.federate.internal"}, ""},
		{"another cluster's internal name", []string{"controlplane.east.federate.internal"}, nil, "federation's own"},
		{"a gossip name", []string{"gossip.west.federate.internal"}, nil, "federation's own"},
		{"a wildcard", []string{"*.example"}, nil, "serving name"},
		{"too many", many, nil, "the limit is 16"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			csr, err := trust.NewCSR(key, tc.requested...)
			if err != nil {
				t.Fatal(err)
			}
			got, err := credentialNames("west", "west.shop", csr)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
