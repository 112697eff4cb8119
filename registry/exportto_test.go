package registry

import (
	"strings"
	"testing"
)

func TestExportedTo(t *testing.T) {
	tests := []struct {
		name     string
		exportTo []string
		client   string
		want     bool
	}{
		{"no exportTo is every namespace", nil, "billing", true},
		{"* is every namespace", []string{"*"}, "billing", true},
		{". is the owner's namespace", []string{"."}, "shop", true},
		{". is not another namespace", []string{"."}, "billing", false},
		{"~ is no namespace, not even the owner's", []string{"~"}, "shop", false},
		{"a named namespace", []string{".", "billing"}, "billing", true},
		{"a namespace not named", []string{".", "billing"}, "ops", false},
		{"the owner's namespace when not named", []string{"billing"}, "shop", false},
		{"an unknown client namespace sees only what is public", []string{"."}, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ExportedTo(tc.exportTo, "shop", tc.client); got != tc.want {
				t.Errorf("ExportedTo(%q, shop, %q) = %v, want %v", tc.exportTo, tc.client, got, tc.want)
			}
		})
	}
}

func TestCheckExportTo(t *testing.T) {
	tests := []struct {
		name     string
		exportTo []string
		wantErr  string
	}{
		{"empty", nil, ""},
		{"own and named", []string{".", "billing"}, ""},
		{"all", []string{"*"}, ""},
		{"none", []string{"~"}, ""},
		{"not a DNS label", []string{"Billing"}, `"Billing" is not`},
		{"repeated", []string{"billing", "billing"}, "listed twice"},
		{"all and a namespace", []string{"*", "billing"}, `"*" cannot be combined`},
		{"none and own", []string{"~", "."}, `"~" cannot be combined`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckExportTo(tc.exportTo)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("CheckExportTo(%q) = %v, want %q", tc.exportTo, err, tc.wantErr)
			}
		})
	}
}
