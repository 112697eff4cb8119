package packages

import (
	"fmt"
	"os"
	"path/filepath"
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
	BinaryPath   = "/usr/bin/federate-agent"
	UnitPath     = "/usr/lib/systemd/system/federate-agent.service"
	SysusersPath = "/usr/lib/sysusers.d/federate-agent.conf"
	TmpfilesPath = "/usr/lib/tmpfiles.d/federate-agent.conf"
	ManPath      = "/usr/share/man/man1/federate-agent.1.gz"
	ConfigDir    = "/etc/federate"
	StateDir     = "/var/lib/federate-agent"
	DocDir       = "/usr/share/doc/federate-agent"
	// LicenseDir is where the rpm keeps the copyright file, as %license.
	LicenseDir = "/usr/share/licenses/federate-agent"
)

// Release is the packaging revision of a version: deb's Debian revision,
// rpm's Release.
const Release = "1"

// Formats are the package formats Build writes.
var Formats = []string{"deb", "rpm"}

// packagingFiles are the files Options.FilesDir must hold.
var packagingFiles = []string{
	"federate-agent.service", "sysusers.conf", "tmpfiles.conf", "postinstall.sh", "preremove.sh", "postremove.sh",
	"agent.env", "sidecar.yaml", "copyright", "federate-agent.1", "lintian-overrides",
}

// Options say what to package and where.
type Options struct {
	// Binary is the federate-agent executable, stripped.
	Binary string
	// Version is the package version, such as "1.2.0" or what
	// 'git describe' prints; see Version.
	Version string
	// FilesDir holds the unit, scripts and configuration templates
	// (deploy/packages/files).
	FilesDir string
	// OutDir receives the packages.
	OutDir string
	// MTime stamps every file and the changelog entry, for reproducible
	// packages (default: the binary's modification time).
	MTime time.Time
}

// Build writes the packages into OutDir under each format's conventional
// name, federate-agent_<version>-1_amd64.deb and
// federate-agent-<version>-1.x86_64.rpm, and returns their paths.
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
	if err := checkStripped(opts.Binary); err != nil {
		return nil, err
	}
	for _, f := range packagingFiles {
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
	// The gzipped files are made here: the changelog for this version,
	// and the manual page.
	tmp, err := os.MkdirTemp(opts.OutDir, ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	man, err := os.ReadFile(filepath.Join(opts.FilesDir, "federate-agent.1"))
	if err != nil {
		return nil, err
	}
	gz := generated{changelog: filepath.Join(tmp, "changelog.Debian.gz"), man: filepath.Join(tmp, "federate-agent.1.gz")}
	if err := writeGzip(gz.changelog, changelog(version, opts.MTime)); err != nil {
		return nil, err
	}
	if err := writeGzip(gz.man, man); err != nil {
		return nil, err
	}
	var out []string
	for _, format := range Formats {
		p, err := nfpm.Get(format)
		if err != nil {
			return nil, err
		}
		// Package and ConventionalFileName rewrite the Info they are
		// given, so each gets its own.
		info := nfpm.WithDefaults(info(opts, format, version, gz))
		naming := *info
		path := filepath.Join(opts.OutDir, p.ConventionalFileName(&naming))
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

// sysusersProvider is, per format, what brings systemd-sysusers and
// systemd-tmpfiles, with which the postinst creates the user and its
// directories: Debian's providers of each, as dh_installsysusers and
// dh_installtmpfiles list them, and systemd in the rpm families. Purge
// removes the user with userdel, which both families always have
// (passwd, shadow-utils).
var sysusersProvider = map[string][]string{
	"deb": {"systemd | systemd-standalone-sysusers | systemd-sysusers", "systemd | systemd-standalone-tmpfiles"},
	"rpm": {"systemd"},
}

// license is the License field: rpm requires it; a .deb states it in its
// copyright file, and dpkg knows no such field.
var license = map[string]string{"rpm": "Apache-2.0"}

// generated are the paths of the files Build makes for the packages.
type generated struct{ changelog, man string }

func info(opts Options, format, version string, gz generated) *nfpm.Info {
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
		Release:       Release,
		Section:       "net",
		Priority:      "optional",
		Maintainer:    maintainer,
		Vendor:        "federate",
		Homepage:      "https://github.com/federate/federate",
		License:       license[format],
		Description: "VM agent of a federated service mesh\n" +
			"Joins a VM to a cluster of a federation through the cluster's east-west\n" +
			"gateway: it trades a one-time token for a SPIFFE identity, registers the VM\n" +
			"as an Istio WorkloadEntry, reports its health, and runs an mTLS sidecar.",
		MTime: opts.MTime,
		Overridables: nfpm.Overridables{
			Depends: sysusersProvider[format],
			Contents: files.Contents{
				{Source: opts.Binary, Destination: BinaryPath, FileInfo: mode(0o755)},
				{Source: file("federate-agent.service"), Destination: UnitPath, FileInfo: mode(0o644)},
				{Source: file("sysusers.conf"), Destination: SysusersPath, FileInfo: mode(0o644)},
				{Source: file("tmpfiles.conf"), Destination: TmpfilesPath, FileInfo: mode(0o644)},
				{Source: gz.man, Destination: ManPath, FileInfo: mode(0o644)},
				{Destination: ConfigDir, Type: files.TypeDir, FileInfo: mode(0o750)},
				{Source: file("agent.env"), Destination: ConfigDir + "/agent.env", Type: files.TypeConfigNoReplace, FileInfo: mode(0o640)},
				{Source: file("sidecar.yaml"), Destination: ConfigDir + "/sidecar.yaml", Type: files.TypeConfigNoReplace, FileInfo: mode(0o640)},
				{Destination: StateDir, Type: files.TypeDir, FileInfo: mode(0o750)},
				{Source: file("copyright"), Destination: DocDir + "/copyright", FileInfo: mode(0o644), Packager: "deb"},
				{Source: gz.changelog, Destination: DocDir + "/changelog.Debian.gz", FileInfo: mode(0o644), Packager: "deb"},
				{Source: file("lintian-overrides"), Destination: "/usr/share/lintian/overrides/" + Name, FileInfo: mode(0o644), Packager: "deb"},
				{Source: file("copyright"), Destination: LicenseDir + "/copyright", Type: files.TypeRPMLicense, FileInfo: mode(0o644), Packager: "rpm"},
			},
			Scripts: nfpm.Scripts{
				PostInstall: file("postinstall.sh"),
				PreRemove:   file("preremove.sh"),
				PostRemove:  file("postremove.sh"),
			},
			RPM: nfpm.RPM{Group: "System Environment/Daemons", Summary: "VM agent of a federated service mesh"},
		},
	}
}
