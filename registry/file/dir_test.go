package file

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReadDir(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"b.yaml":       "b",
		"a.yml":        "a",
		"C.YAML":       "c",
		".hidden.yaml": "hidden",
		"notes.txt":    "notes",
		"yaml":         "no extension",
	})
	if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, filepath.Join(dir, "sub.yaml"), map[string]string{"inner.yaml": "inner"})
	other := t.TempDir()
	writeFiles(t, other, map[string]string{"target.yaml": "linked"})
	if err := os.Symlink(filepath.Join(other, "target.yaml"), filepath.Join(dir, "d.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, filepath.Join(dir, "e.yaml")); err != nil {
		t.Fatal(err)
	}

	got, err := ReadDir(dir)
	if err != nil {
		t.Fatalf("ReadDir: %v", err)
	}
	want := []YAMLFile{
		{Path: filepath.Join(dir, "C.YAML"), Data: []byte("c")},
		{Path: filepath.Join(dir, "a.yml"), Data: []byte("a")},
		{Path: filepath.Join(dir, "b.yaml"), Data: []byte("b")},
		{Path: filepath.Join(dir, "d.yaml"), Data: []byte("linked")},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ReadDir mismatch (-want +got):\n%s", diff)
	}
}

// A file that cannot be read is reported with its path, and the others
// still come back.
func TestReadDirReportsEachBadFile(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.yaml": "a", "c.yaml": "c"})
	for _, name := range []string{"b.yaml", "d.yml"} {
		if err := os.Symlink(filepath.Join(dir, "absent"), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadDir(dir)
	if len(got) != 2 || got[0].Path != filepath.Join(dir, "a.yaml") || got[1].Path != filepath.Join(dir, "c.yaml") {
		t.Errorf("ReadDir returned %+v, want a.yaml and c.yaml", got)
	}
	if err == nil {
		t.Fatal("ReadDir hid two dangling links")
	}
	for _, name := range []string{"b.yaml", "d.yml"} {
		if want := "file: " + filepath.Join(dir, name) + ": stat: "; !strings.Contains(err.Error(), want) {
			t.Errorf("ReadDir error %q does not contain %q", err, want)
		}
	}
	if fe, ok := errors.AsType[*FileError](err); !ok || fe.File != filepath.Join(dir, "b.yaml") {
		t.Errorf("ReadDir error %v: want a *FileError for b.yaml first", err)
	}

	if _, err := ReadDir(filepath.Join(dir, "absent")); err == nil || !strings.Contains(err.Error(), "read config directory") {
		t.Errorf("ReadDir of a missing directory: %v", err)
	}
}

// ParseDir returns what parses and reports every file that does not.
func TestParseDirReportsEveryBrokenFile(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"a.yaml": exampleYAML,
		"b.yaml": "kind: Gateway\n",
		"c.yaml": "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm}\nspec: {address: nowhere}\n",
	})
	docs, err := ParseDir(dir)
	if len(docs) == 0 || docs[0].File != filepath.Join(dir, "a.yaml") {
		t.Errorf("ParseDir returned %d documents, want a.yaml's", len(docs))
	}
	for _, want := range []string{
		"file: " + filepath.Join(dir, "b.yaml") + ": document 1 (line 1): unknown kind",
		"file: " + filepath.Join(dir, "c.yaml") + ": document 1 (line 1): WorkloadEntry default/vm: spec.address",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDir error %v does not contain %q", err, want)
		}
	}
}
