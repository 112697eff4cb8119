// Package images builds the OCI images of federate's servers without a
// container engine: a static binary per platform, a non-root user and OCI
// labels, put together with go-containerregistry into one multi-platform
// index and written as a tar of an OCI image layout, which
// 'kind load image-archive', 'ctr images import', 'skopeo copy
// oci-archive:' and 'crane push' all read.
package images

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// User is the numeric user and group the images run as: distroless's
// "nonroot", which the manifests' securityContext also names.
const User = "65532:65532"

// BinDir is where the binary lands in the image.
const BinDir = "/usr/local/bin"

// OCI annotation and label keys the images carry.
const (
	LabelVersion  = "org.opencontainers.image.version"
	LabelSource   = "org.opencontainers.image.source"
	LabelRevision = "org.opencontainers.image.revision"
	LabelTitle    = "org.opencontainers.image.title"
	LabelCreated  = "org.opencontainers.image.created"
	// RefName is the OCI layout's tag annotation; containerdImageName is
	// the full reference containerd's importer (and so kind) names the
	// image by.
	RefName             = "org.opencontainers.image.ref.name"
	containerdImageName = "io.containerd.image.name"
)

// Spec describes one image: one program, built for several platforms.
type Spec struct {
	// Name is the program's name: the binary is BinDir/Name and the
	// entrypoint.
	Name string
	// Binaries maps a platform, "linux/amd64", to a static binary built
	// for it.
	Binaries map[string]string
	// Reference is the image's full name with its tag, e.g.
	// federate/federate:v0.4.0.
	Reference string
	// Version and Source become the OCI labels; Revision (a commit) is
	// optional.
	Version, Source, Revision string
	// Created is the images' creation time, e.g. the commit's; the zero
	// time means the Unix epoch. Either keeps builds reproducible.
	Created time.Time
	// CACertificates, if set, is a PEM bundle installed as
	// /etc/ssl/certs/ca-certificates.crt for web-PKI TLS.
	CACertificates string
}

func (s Spec) validate() error {
	if s.Name == "" || strings.ContainsAny(s.Name, "/ ") {
		return fmt.Errorf("images: image name %q: want a program name such as federate", s.Name)
	}
	if len(s.Binaries) == 0 {
		return fmt.Errorf("images: %s: no binaries: pass --binary linux/amd64=PATH for each platform", s.Name)
	}
	if s.Reference == "" || !strings.Contains(path.Base(s.Reference), ":") {
		return fmt.Errorf("images: %s: reference %q has no tag: want REPOSITORY:TAG", s.Name, s.Reference)
	}
	if s.Version == "" || s.Source == "" {
		return fmt.Errorf("images: %s: the version and source labels are required", s.Name)
	}
	return nil
}

// Build assembles the multi-platform index of s.
func Build(s Spec) (v1.ImageIndex, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	if s.Created.IsZero() {
		s.Created = time.Unix(0, 0)
	}
	base, err := baseLayer(s.CACertificates)
	if err != nil {
		return nil, err
	}
	platforms := make([]string, 0, len(s.Binaries))
	for p := range s.Binaries {
		platforms = append(platforms, p)
	}
	sort.Strings(platforms)
	var idx v1.ImageIndex = empty.Index
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	for _, p := range platforms {
		plat, err := v1.ParsePlatform(p)
		if err != nil || plat.OS != "linux" || plat.Architecture == "" {
			return nil, fmt.Errorf("images: %s: platform %q: want linux/ARCH, e.g. linux/arm64", s.Name, p)
		}
		img, err := s.image(base, s.Binaries[p], plat)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	return mutate.Annotations(idx, s.labels()).(v1.ImageIndex), nil
}

func (s Spec) labels() map[string]string {
	l := map[string]string{LabelVersion: s.Version, LabelSource: s.Source, LabelTitle: s.Name, LabelCreated: s.Created.UTC().Format(time.RFC3339)}
	if s.Revision != "" {
		l[LabelRevision] = s.Revision
	}
	return l
}

// image is one platform's image: the base layer, then the binary.
func (s Spec) image(base v1.Layer, binary string, plat *v1.Platform) (v1.Image, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("images: %s for %s: %w: build it first (make images does)", s.Name, plat, err)
	}
	binLayer, err := layer([]file{{name: BinDir + "/" + s.Name, mode: 0o755, data: bin}})
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if img, err = mutate.AppendLayers(img, base, binLayer); err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = plat.OS, plat.Architecture, plat.Variant
	cf.Created = v1.Time{Time: s.Created.UTC()}
	cf.Config = v1.Config{
		User:       User,
		Entrypoint: []string{BinDir + "/" + s.Name},
		WorkingDir: "/",
		Env:        []string{"PATH=" + BinDir + ":/usr/bin:/bin"},
		Labels:     s.labels(),
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	return mutate.Annotations(img, s.labels()).(v1.Image), nil
}

// file is one entry of a layer.
type file struct {
	name string
	mode int64
	data []byte
	dir  bool
	uid  int
}

// baseLayer holds what a static Go program expects of a system: a user
// database naming the non-root user, a writable /tmp, and optionally the
// web PKI roots.
func baseLayer(caBundle string) (v1.Layer, error) {
	files := []file{
		{name: "etc", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "home", mode: 0o755, dir: true},
		{name: "home/nonroot", mode: 0o700, dir: true, uid: 65532},
		{name: "tmp", mode: 0o1777, dir: true},
	}
	if caBundle != "" {
		pem, err := os.ReadFile(caBundle)
		if err != nil {
			return nil, fmt.Errorf("images: CA certificates: %w", err)
		}
		files = append(files, file{name: "etc/ssl", mode: 0o755, dir: true}, file{name: "etc/ssl/certs", mode: 0o755, dir: true},
			file{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: pem})
	}
	return layer(files)
}

// layer tars files (parent directories first) into a gzipped OCI layer
// with fixed times, so that the same inputs give the same digest.
func layer(files []file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	seen := map[string]bool{}
	for _, f := range files {
		name := strings.TrimPrefix(f.name, "/")
		if err := writeParents(tw, name, seen); err != nil {
			return nil, err
		}
		hdr := &tar.Header{Name: name, Mode: f.mode, Uid: f.uid, Gid: f.uid, ModTime: time.Unix(0, 0)}
		if f.dir {
			seen[name] = true
			hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		} else {
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// writeParents writes the directories above name that no earlier entry
// named, outermost first.
func writeParents(tw *tar.Writer, name string, seen map[string]bool) error {
	var missing []string
	for dir := path.Dir(name); dir != "." && !seen[dir]; dir = path.Dir(dir) {
		missing = append(missing, dir)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		seen[missing[i]] = true
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: missing[i] + "/", Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
	}
	return nil
}

// WriteArchive writes idx as a tar of an OCI image layout to out, its
// index.json naming it by reference so that importers tag it.
func WriteArchive(idx v1.ImageIndex, reference, out string) error {
	dir, err := os.MkdirTemp(filepath.Dir(out), ".oci-layout-")
	if err != nil {
		return fmt.Errorf("images: %w: create the output directory first", err)
	}
	defer os.RemoveAll(dir)
	tag := reference[strings.LastIndex(reference, ":")+1:]
	top := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: idx, Descriptor: v1.Descriptor{
		Annotations: map[string]string{RefName: tag, containerdImageName: reference},
	}})
	if _, err := layout.Write(dir, top); err != nil {
		return fmt.Errorf("images: write the OCI layout: %w", err)
	}
	return tarDir(dir, out)
}

// tarDir writes the files under dir, in a stable order, into the tar out.
func tarDir(dir, out string) (err error) {
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	tw := tar.NewWriter(f)
	var paths []string
	if err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && p != dir {
			paths = append(paths, p)
		}
		return err
	}); err != nil {
		return err
	}
	sort.Strings(paths)
	for _, p := range paths {
		if err := addFile(tw, dir, p); err != nil {
			return err
		}
	}
	return tw.Close()
}

func addFile(tw *tar.Writer, dir, p string) error {
	info, err := os.Stat(p)
	if err != nil {
		return err
	}
	rel, _ := filepath.Rel(dir, p)
	hdr := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, ModTime: time.Unix(0, 0)}
	if info.IsDir() {
		hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o755
		return tw.WriteHeader(hdr)
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, info.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	src, err := os.Open(p)
	if err != nil {
		return err
	}
	defer src.Close()
	_, err = io.Copy(tw, src)
	return err
}
