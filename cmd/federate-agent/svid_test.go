package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

func TestSVIDModeHelpAndBadInput(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"svid", "--help"}, &out, &out); err != nil {
		t.Fatalf("svid --help: %v", err)
	}
	for _, f := range []string{"--config-dir", "--state-dir", "--svid-dir", "--bundle-refresh", "--log-level", "--log-format"} {
		if !strings.Contains(out.String(), "  "+f+" ") {
			t.Errorf("svid --help does not document %s:\n%s", f, out.String())
		}
	}
	dir := t.TempDir()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no bootstrap", []string{"--config-dir", filepath.Join(dir, "none"), "--state-dir", filepath.Join(dir, "state"), "--svid-dir", filepath.Join(dir, "svid")}, "cluster.env: missing"},
		{"one directory for both", []string{"--state-dir", dir, "--svid-dir", dir}, "are both"},
		{"no refresh", []string{"--bundle-refresh", "0s"}, "want a positive duration"},
		{"bad log level", []string{"--log-level", "loud"}, "--log-level"},
		{"extra argument", []string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tc := range cases {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"svid"}, tc.args...), &out, &out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}
