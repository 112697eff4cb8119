package images

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// testBinaries writes one small file per platform, each with its own
// content, so that the test can tell which landed in which image.
func testBinaries(t *testing.T, name string, platforms ...string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	out := map[string]string{}
	for _, p := range platforms {
		path := filepath.Join(dir, strings.ReplaceAll(p, "/", "_")+"-"+name)
		if err := os.WriteFile(path, []byte("\x7fELF test binary "+name+" for "+p), 0o755); err != nil {
			t.Fatal(err)
		}
		out[p] = path
	}
	return out
}

// readArchive unpacks an OCI archive and opens its layout.
func readArchive(t *testing.T, archive string) layout.Path {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		if hdr.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatalf("the archive is no OCI layout: %v", err)
	}
	return p
}

// files lists an image's flattened file system: name to header and content.
func files(t *testing.T, img v1.Image) map[string]*tar.Header {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*tar.Header{}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(rc)
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(zr)
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(tr)
			hdr.PAXRecords = map[string]string{"content": string(data)}
			out[strings.TrimSuffix(hdr.Name, "/")] = hdr
		}
		rc.Close()
	}
	return out
}

// An archive holds one index naming the image, with an amd64 and an arm64
// image each running its own platform's binary as user 65532, labelled
// with the version and source.
func TestArchiveHoldsMultiPlatformNonRootImage(t *testing.T) {
	for _, name := range []string{"federate", "eastwest-gateway"} {
		t.Run(name, func(t *testing.T) {
			bins := testBinaries(t, name, "linux/amd64", "linux/arm64")
			ref := "registry.example/federate/" + name + ":v1.2.3"
			spec := Spec{Name: name, Binaries: bins, Reference: ref, Version: "v1.2.3", Source: "https://github.com/federate/federate", Revision: "abc123"}
			idx, err := Build(spec)
			if err != nil {
				t.Fatal(err)
			}
			archive := filepath.Join(t.TempDir(), name+".oci.tar")
			if err := WriteArchive(idx, ref, archive); err != nil {
				t.Fatal(err)
			}
			checkLayout(t, readArchive(t, archive), spec)
		})
	}
}

func checkLayout(t *testing.T, p layout.Path, spec Spec) {
	t.Helper()
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 {
		t.Fatalf("index.json lists %d entries, want the one image index", len(tm.Manifests))
	}
	ann := tm.Manifests[0].Annotations
	if ann[RefName] != "v1.2.3" || ann[containerdImageName] != spec.Reference {
		t.Errorf("index.json annotations %v: want the tag and the full reference %s", ann, spec.Reference)
	}
	idx, err := top.ImageIndex(tm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	// Every blob is present and matches its digest and size.
	if err := validate.Index(idx); err != nil {
		t.Fatalf("the archive's index does not validate: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.Annotations[LabelVersion] != "v1.2.3" || im.Annotations[LabelSource] != spec.Source {
		t.Errorf("index annotations %v: want version and source", im.Annotations)
	}
	var archs []string
	for _, d := range im.Manifests {
		archs = append(archs, d.Platform.OS+"/"+d.Platform.Architecture)
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkImage(t, img, spec, d.Platform)
	}
	if strings.Join(archs, ",") != "linux/amd64,linux/arm64" {
		t.Errorf("platforms %v: want linux/amd64 and linux/arm64", archs)
	}
}

func checkImage(t *testing.T, img v1.Image, spec Spec, plat *v1.Platform) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	entry := "/usr/local/bin/" + spec.Name
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("%s: user %q, want 65532:65532", plat, c.User)
	}
	if len(c.Entrypoint) != 1 || c.Entrypoint[0] != entry {
		t.Errorf("%s: entrypoint %v, want [%s]", plat, c.Entrypoint, entry)
	}
	if cf.Architecture != plat.Architecture || cf.OS != "linux" {
		t.Errorf("config says %s/%s, index says %s", cf.OS, cf.Architecture, plat)
	}
	for k, want := range map[string]string{LabelVersion: "v1.2.3", LabelSource: spec.Source, LabelRevision: "abc123", LabelTitle: spec.Name, LabelCreated: "1970-01-01T00:00:00Z"} {
		if c.Labels[k] != want {
			t.Errorf("%s: label %s = %q, want %q", plat, k, c.Labels[k], want)
		}
	}
	fs := files(t, img)
	bin := fs[strings.TrimPrefix(entry, "/")]
	if bin == nil {
		t.Fatalf("%s: no %s in the image", plat, entry)
	}
	want, _ := os.ReadFile(spec.Binaries[plat.OS+"/"+plat.Architecture])
	if bin.PAXRecords["content"] != string(want) || bin.Mode != 0o755 {
		t.Errorf("%s: %s is %q mode %o, want that platform's binary, mode 755", plat, entry, bin.PAXRecords["content"], bin.Mode)
	}
	if !strings.Contains(fs["etc/passwd"].PAXRecords["content"], "nonroot:x:65532:65532:") {
		t.Errorf("%s: /etc/passwd does not name user 65532", plat)
	}
	if tmp := fs["tmp"]; tmp == nil || tmp.Mode != 0o1777 {
		t.Errorf("%s: no world-writable sticky /tmp", plat)
	}
}

// The same inputs build the same digest, so rebuilding a release is
// checkable.
func TestBuildIsReproducible(t *testing.T) {
	bins := testBinaries(t, "federate", "linux/amd64", "linux/arm64")
	spec := Spec{Name: "federate", Binaries: bins, Reference: "federate/federate:dev", Version: "dev", Source: "https://github.com/federate/federate"}
	var digests []v1.Hash
	for range 2 {
		idx, err := Build(spec)
		if err != nil {
			t.Fatal(err)
		}
		d, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
	}
	if digests[0] != digests[1] {
		t.Errorf("two builds of the same inputs differ: %s and %s", digests[0], digests[1])
	}
}

// Bad input is refused with an error that says what to pass.
func TestBuildRefusesBadSpecs(t *testing.T) {
	bins := testBinaries(t, "federate", "linux/amd64")
	good := Spec{Name: "federate", Binaries: bins, Reference: "federate/federate:dev", Version: "dev", Source: "s"}
	cases := map[string]struct {
		mutate func(*Spec)
		want   string
	}{
		"no tag":         {func(s *Spec) { s.Reference = "registry:5000/federate/federate" }, "has no tag"},
		"no binaries":    {func(s *Spec) { s.Binaries = nil }, "--binary"},
		"bad platform":   {func(s *Spec) { s.Binaries = map[string]string{"windows/amd64": bins["linux/amd64"]} }, "want linux/ARCH"},
		"missing binary": {func(s *Spec) { s.Binaries = map[string]string{"linux/arm64": "/nonexistent/federate"} }, "build it first"},
		"no version":     {func(s *Spec) { s.Version = "" }, "version and source"},
		"name with path": {func(s *Spec) { s.Name = "bin/federate" }, "program name"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s := good
			c.mutate(&s)
			_, err := Build(s)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "images: ") {
				t.Fatalf("Build: %v, want an images: error containing %q", err, c.want)
			}
		})
	}
	if _, err := Build(good); err != nil {
		t.Fatalf("the good spec: %v", err)
	}
}
