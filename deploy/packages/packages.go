package packages

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// Name is the package name; the unit and the system user share it.
const Name = "federate-agent"

// Paths inside the package.
const (
	BinaryPath = "/usr/bin/federate-agent"
	UnitPath   = "/usr/lib/systemd/system/federate-agent.service"
	ConfigDir  = "/etc/federate"
	StateDir   = "/var/lib/federate-agent"
)

// Formats are the package formats Build writes.
var Formats = []string{"deb", "rpm"}

// Options say what to package and where.
type Options struct {
	// Binary is the federate-agent executable.
	Binary string
	// Version is the package version, such as "1.2.0" or what
	// 'git describe' prints; see Version.
	Version string
	// FilesDir holds the unit, scripts and configuration templates
	// (deploy/packages/files).
	FilesDir string
	// OutDir receives the packages.
	OutDir string
	// MTime stamps every file, for reproducible packages (default: the
	// binary's modification time).
	MTime time.Time
}

// Build writes <OutDir>/federate-agent_<version>_amd64.deb and .rpm and
// returns their paths.
func Build(opts Options) ([]string, error) {
	version, err := Version(opts.Version)
	if err != nil {
		return nil, err
	}
	bin, err := os.Stat(opts.Binary)
	if err != nil {
		return nil, fmt.Errorf("packages: the agent binary: %w; build it first ('make packages' does)", err)
	}
	if !bin.Mode().IsRegular() || bin.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("packages: %s is not an executable file", opts.Binary)
	}
	for _, f := range []string{"federate-agent.service", "postinstall.sh", "preremove.sh", "agent.env", "sidecar.yaml"} {
		if _, err := os.Stat(filepath.Join(opts.FilesDir, f)); err != nil {
			return nil, fmt.Errorf("packages: packaging file: %w", err)
		}
	}
	if opts.MTime.IsZero() {
		opts.MTime = bin.ModTime()
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return nil, err
	}
	var out []string
	for _, format := range Formats {
		p, err := nfpm.Get(format)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(opts.OutDir, fmt.Sprintf("%s_%s_amd64.%s", Name, version, format))
		// Package rewrites the Info it is given, so each format gets its own.
		info := nfpm.WithDefaults(info(opts, version))
		info.Target = path
		if err := writePackage(p, info, path); err != nil {
			return nil, fmt.Errorf("packages: %s: %w", format, err)
		}
		out = append(out, path)
	}
	return out, nil
}

func writePackage(p nfpm.Packager, info *nfpm.Info, path string) error {
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := p.Package(info, f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func info(opts Options, version string) *nfpm.Info {
	file := func(name string) string { return filepath.Join(opts.FilesDir, name) }
	mode := func(m os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Mode: m, MTime: opts.MTime}
	}
	return &nfpm.Info{
		Name:          Name,
		Arch:          "amd64",
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none", // Version already made it valid for both formats
		Release:       "1",
		Section:       "net",
		Priority:      "optional",
		Maintainer:    "federate maintainers <maintainers@federate.dev>",
		Vendor:        "federate",
		Homepage:      "https://github.com/federate/federate",
		License:       "Apache-2.0",
		Description: "VM agent of a federated service mesh\n" +
			"Joins a VM to a cluster of a federation through the cluster's east-west\n" +
			"gateway: it trades a one-time token for a SPIFFE identity, registers the VM\n" +
			"as an Istio WorkloadEntry, reports its health, and runs an mTLS sidecar.",
		MTime: opts.MTime,
		Overridables: nfpm.Overridables{
			Depends: []string{"passwd"},
			Contents: files.Contents{
				{Source: opts.Binary, Destination: BinaryPath, FileInfo: mode(0o755)},
				{Source: file("federate-agent.service"), Destination: UnitPath, FileInfo: mode(0o644)},
				{Destination: ConfigDir, Type: files.TypeDir, FileInfo: mode(0o750)},
				{Source: file("agent.env"), Destination: ConfigDir + "/agent.env", Type: files.TypeConfigNoReplace, FileInfo: mode(0o640)},
				{Source: file("sidecar.yaml"), Destination: ConfigDir + "/sidecar.yaml", Type: files.TypeConfigNoReplace, FileInfo: mode(0o640)},
				{Destination: StateDir, Type: files.TypeDir, FileInfo: mode(0o750)},
			},
			Scripts: nfpm.Scripts{
				PostInstall: file("postinstall.sh"),
				PreRemove:   file("preremove.sh"),
			},
			RPM: nfpm.RPM{Group: "System Environment/Daemons", Summary: "VM agent of a federated service mesh"},
		},
	}
}

// describe matches what 'git describe --tags --always --dirty' prints:
// an optional tag, commits since it and the commit, and -dirty.
var describe = regexp.MustCompile(`^v?([0-9][0-9A-Za-z.]*)(?:-([0-9]+)-g([0-9a-f]+))?(-dirty)?$`)

var commitOnly = regexp.MustCompile(`^([0-9a-f]{4,40})(-dirty)?$`)

// Version turns a version or 'git describe' output into one that both
// dpkg and rpm accept: v1.2.0 -> 1.2.0, v1.2.0-3-gabc1234 -> 1.2.0+3.gabc1234,
// abc1234-dirty (no tag yet) -> 0.0.0+gabc1234.dirty.
func Version(v string) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", errors.New("packages: no version given: pass one, or what 'git describe --tags --always --dirty' prints")
	}
	if m := describe.FindStringSubmatch(v); m != nil && !commitOnly.MatchString(v) {
		out := m[1]
		var extra []string
		if m[2] != "" {
			extra = append(extra, m[2], "g"+m[3])
		}
		if m[4] != "" {
			extra = append(extra, "dirty")
		}
		if len(extra) > 0 {
			out += "+" + strings.Join(extra, ".")
		}
		return out, nil
	}
	if m := commitOnly.FindStringSubmatch(v); m != nil {
		out := "0.0.0+g" + m[1]
		if m[2] != "" {
			out += ".dirty"
		}
		return out, nil
	}
	return "", fmt.Errorf("packages: version %q: want a tag such as v1.2.0 or 'git describe' output", v)
}
