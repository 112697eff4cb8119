package sni

import (
	"errors"
	"strings"
	"testing"
)

func TestParseIstio(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Istio
		wantErr error
	}{
		{name: "no subset", in: "outbound_.9080_._.reviews.default.svc.cluster.local",
			want: Istio{Port: 9080, Host: "reviews.default.svc.cluster.local"}},
		{name: "subset", in: "outbound_.9080_.v1_.reviews.default.svc.cluster.local",
			want: Istio{Port: 9080, Subset: "v1", Host: "reviews.default.svc.cluster.local"}},
		{name: "host with _.", in: "outbound_.443_.canary_.a_.b.example.com",
			want: Istio{Port: 443, Subset: "canary", Host: "a_.b.example.com"}},
		{name: "host ending in _", in: "outbound_.1_._.ab_",
			want: Istio{Port: 1, Host: "ab_"}},
		{name: "highest port", in: "outbound_.65535_._.a",
			want: Istio{Port: 65535, Host: "a"}},
		{name: "inbound", in: "inbound_.9080_._.reviews.default.svc.cluster.local", wantErr: ErrNotIstio},
		{name: "pipe form", in: "outbound|9080|v1|reviews.default.svc.cluster.local", wantErr: ErrNotIstio},
		{name: "plain host", in: "reviews.default.svc.cluster.local", wantErr: ErrNotIstio},
		{name: "too few parts", in: "outbound_.9080_.reviews", wantErr: ErrNotIstio},
		{name: "empty", in: "", wantErr: ErrNotIstio},
		{name: "upper-case direction", in: "OUTBOUND_.9080_._.a", wantErr: ErrNotIstio},
		{name: "port 0", in: "outbound_.0_._.a", wantErr: ErrBadIstioName},
		{name: "port too large", in: "outbound_.65536_._.a", wantErr: ErrBadIstioName},
		{name: "port leading zero", in: "outbound_.080_._.a", wantErr: ErrBadIstioName},
		{name: "port sign", in: "outbound_.+80_._.a", wantErr: ErrBadIstioName},
		{name: "port empty", in: "outbound_._._.a", wantErr: ErrBadIstioName},
		{name: "subset upper case", in: "outbound_.80_.V1_.a", wantErr: ErrBadIstioName},
		{name: "subset with dot", in: "outbound_.80_.v.1_.a", wantErr: ErrBadIstioName},
		{name: "subset leading dash", in: "outbound_.80_.-v1_.a", wantErr: ErrBadIstioName},
		{name: "subset too long", in: "outbound_.80_." + strings.Repeat("v", 64) + "_.a", wantErr: ErrBadIstioName},
		{name: "host empty", in: "outbound_.80_._.", wantErr: ErrBadIstioName},
		{name: "host trailing dot", in: "outbound_.80_._.a.b.", wantErr: ErrBadIstioName},
		{name: "host empty label", in: "outbound_.80_._.a..b", wantErr: ErrBadIstioName},
		{name: "host upper case", in: "outbound_.80_._.Reviews.default", wantErr: ErrBadIstioName},
		{name: "host wildcard", in: "outbound_.80_._.*.example.com", wantErr: ErrBadIstioName},
		{name: "host label too long", in: "outbound_.80_._." + strings.Repeat("a", 64), wantErr: ErrBadIstioName},
		{name: "host too long", in: "outbound_.80_._." + strings.Repeat("abcdefg.", 32) + "a", wantErr: ErrBadIstioName},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseIstio(tc.in)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("ParseIstio(%q) error %v, want %v", tc.in, err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("ParseIstio(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
			if tc.wantErr == nil && got.String() != tc.in {
				t.Fatalf("String() = %q, want %q", got.String(), tc.in)
			}
		})
	}
}

func TestIstioRoundTrip(t *testing.T) {
	for _, n := range []Istio{
		{Port: 9080, Host: "reviews.default.svc.cluster.local"},
		{Port: 9080, Subset: "v1", Host: "reviews.default.svc.cluster.local"},
		{Port: 15012, Subset: "a-b-0", Host: "istiod.istio-system.svc"},
		{Port: 1, Subset: "x", Host: "a_.b_._.c"},
	} {
		if err := n.Validate(); err != nil {
			t.Fatalf("%+v: %v", n, err)
		}
		got, err := ParseIstio(n.String())
		if err != nil || got != n {
			t.Fatalf("ParseIstio(%q) = %+v, %v; want %+v", n.String(), got, err, n)
		}
	}
	for _, n := range []Istio{
		{Host: "a"},
		{Port: 80, Subset: "v1_", Host: "a"},
		{Port: 80},
		{Port: 80, Host: "A.b"},
	} {
		if err := n.Validate(); !errors.Is(err, ErrBadIstioName) {
			t.Fatalf("Validate(%+v) = %v, want ErrBadIstioName", n, err)
		}
	}
}
