package registry_test

import (
	"errors"
	"strings"
	"testing"
	"unicode"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/federate/federate/registry"
)

func TestParseLocality(t *testing.T) {
	tests := []struct {
		in      string
		want    *registry.Locality
		wantErr string
	}{
		{in: "", want: &registry.Locality{}},
		{in: "us-east", want: &registry.Locality{Region: "us-east"}},
		{in: "us-east/us-east-1a", want: &registry.Locality{Region: "us-east", Zone: "us-east-1a"}},
		{in: "us/z/s-1.a", want: &registry.Locality{Region: "us", Zone: "z", Subzone: "s-1.a"}},
		{in: "a/b/c/d", wantErr: "has 4 parts"},
		{in: "/", wantErr: "empty part"},
		{in: "/a", wantErr: "empty part"},
		{in: "a/", wantErr: "empty part"},
		{in: "a//b", wantErr: "empty part"},
		{in: "a /b", wantErr: "white space"},
		{in: "a/\tb", wantErr: "white space"},
		{in: "a/b\x00", wantErr: "control characters"},
		{in: "a/\x7fb", wantErr: "control characters"},
		{in: "*", wantErr: "'*' is a wildcard"},
		{in: "a/*", wantErr: "'*' is a wildcard"},
		{in: "a/b*", wantErr: "'*' is a wildcard"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := registry.ParseLocality(tt.in)
			if tt.wantErr != "" {
				if !errors.Is(err, registry.ErrInvalidLocality) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseLocality(%q) error = %v, want ErrInvalidLocality containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseLocality(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("ParseLocality(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
			if s := registry.FormatLocality(got); s != tt.in {
				t.Errorf("FormatLocality(ParseLocality(%q)) = %q", tt.in, s)
			}
		})
	}
}

func TestSplitLocalityLeavesWildcards(t *testing.T) {
	for in, want := range map[string][]string{"*": {"*"}, "us/*": {"us", "*"}, "us/z/*": {"us", "z", "*"}} {
		got, err := registry.SplitLocality(in)
		if err != nil || !cmp.Equal(got, want) {
			t.Errorf("SplitLocality(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// FuzzParseLocality checks the one locality parser: whatever parses has one
// to three non-empty parts free of white space, control characters and '*',
// and round-trips through FormatLocality; whatever fails wraps
// ErrInvalidLocality; nothing panics.
func FuzzParseLocality(f *testing.F) {
	for _, s := range []string{"", "us-east", "us-east/us-east-1a", "r/z/s", "a//b", "*", "r/*", "a/b/c/d", " a", "a\x00", "a/\u0085b", "é/ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := registry.ParseLocality(s)
		if err != nil {
			if !errors.Is(err, registry.ErrInvalidLocality) {
				t.Fatalf("ParseLocality(%q) error %v does not wrap ErrInvalidLocality", s, err)
			}
			return
		}
		if got := registry.FormatLocality(l); got != s {
			t.Fatalf("FormatLocality(ParseLocality(%q)) = %q", s, got)
		}
		if s == "" {
			return
		}
		if strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r == '*' }) {
			t.Fatalf("ParseLocality accepted %q", s)
		}
		parts, err := registry.SplitLocality(s)
		if err != nil || len(parts) < 1 || len(parts) > 3 {
			t.Fatalf("ParseLocality accepted %q, which SplitLocality gives as %q, %v", s, parts, err)
		}
	})
}
