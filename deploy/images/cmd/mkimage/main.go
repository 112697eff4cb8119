// Command mkimage writes an OCI image archive of one of federate's
// programs from static binaries built beforehand ('make images' runs it).
//
//	mkimage --name federate --reference federate/federate:v0.4.0 \
//	    --binary linux/amd64=bin/linux_amd64/federate --binary linux/arm64=bin/linux_arm64/federate \
//	    --version v0.4.0 --source https://github.com/federate/federate --out dist/federate.oci.tar
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/federate/federate/deploy/images"
)

// binaryFlag collects repeated --binary PLATFORM=PATH.
type binaryFlag map[string]string

func (b binaryFlag) String() string { return fmt.Sprint(map[string]string(b)) }

func (b binaryFlag) Set(v string) error {
	platform, file, ok := strings.Cut(v, "=")
	if !ok || platform == "" || file == "" {
		return fmt.Errorf("%q: want PLATFORM=PATH, e.g. linux/arm64=bin/linux_arm64/federate", v)
	}
	b[platform] = file
	return nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "mkimage:", err)
		}
		os.Exit(2)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	spec := images.Spec{Binaries: binaryFlag{}}
	var out, created string
	fs.StringVar(&spec.Name, "name", "", "the program: federate or eastwest-gateway")
	fs.Var(binaryFlag(spec.Binaries), "binary", "PLATFORM=PATH of a static binary, e.g. linux/amd64=bin/linux_amd64/federate; repeat per platform")
	fs.StringVar(&spec.Reference, "reference", "", "the image's name and tag, REPOSITORY:TAG")
	fs.StringVar(&spec.Version, "version", "", "the org.opencontainers.image.version label")
	fs.StringVar(&spec.Source, "source", "https://github.com/federate/federate", "the org.opencontainers.image.source label")
	fs.StringVar(&spec.Revision, "revision", "", "the org.opencontainers.image.revision label (a commit)")
	fs.StringVar(&spec.CACertificates, "ca-certificates", "", "PEM bundle to install as /etc/ssl/certs/ca-certificates.crt (optional)")
	fs.StringVar(&created, "created", "", "the images' creation time, RFC 3339 (default: the Unix epoch); make images passes the commit's time")
	fs.StringVar(&out, "out", "", "the OCI archive to write, e.g. dist/federate.oci.tar")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if out == "" {
		return errors.New("--out is required")
	}
	if created != "" {
		t, err := time.Parse(time.RFC3339, created)
		if err != nil {
			return fmt.Errorf("--created %q: want an RFC 3339 time such as 2026-12-03T08:00:00Z", created)
		}
		spec.Created = t
	}
	idx, err := images.Build(spec)
	if err != nil {
		return err
	}
	if err := images.WriteArchive(idx, spec.Reference, out); err != nil {
		return err
	}
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s: %s@%s (%d platforms)\n", out, spec.Reference, d, len(spec.Binaries))
	return nil
}
