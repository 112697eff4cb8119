package packages

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tool returns the path of a command the test needs, or fails naming the
// package that provides it.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed to check the packages: apt-get install %s", name, pkg)
	}
	return p
}

func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func contains(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s does not list %q:\n%s", what, w, out)
		}
	}
}

// build packages a stand-in executable: what is checked here is the
// packaging, not the agent.
func build(t *testing.T, version string) (deb, rpm string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "federate-agent")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho federate-agent\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return buildWith(t, bin, version)
}

// buildWith packages bin and checks the packages' names.
func buildWith(t *testing.T, bin, version string) (deb, rpm string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "dist")
	paths, err := Build(Options{Binary: bin, Version: version, FilesDir: "files", OutDir: out, MTime: time.Unix(1700000000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	// Each format's conventional name: name_version-revision_arch.deb and
	// name-version-release.arch.rpm.
	want := []string{
		filepath.Join(out, "federate-agent_"+version+"-1_amd64.deb"),
		filepath.Join(out, "federate-agent-"+version+"-1.x86_64.rpm"),
	}
	if len(paths) != 2 || paths[0] != want[0] || paths[1] != want[1] {
		t.Fatalf("Build wrote %v, want %v", paths, want)
	}
	if left, _ := filepath.Glob(filepath.Join(out, ".*")); len(left) > 0 {
		t.Errorf("Build left %v behind", left)
	}
	return paths[0], paths[1]
}

func TestDebListsBinaryUnitConfigAndScripts(t *testing.T) {
	dpkgDeb := tool(t, "dpkg-deb", "dpkg")
	deb, _ := build(t, "1.2.0")
	info := output(t, dpkgDeb, "--info", deb)
	contains(t, "dpkg-deb --info", info, "Package: federate-agent", "Version: 1.2.0-1", "Architecture: amd64",
		"Depends: systemd | systemd-standalone-sysusers | systemd-sysusers, systemd | systemd-standalone-tmpfiles",
		"postinst", "prerm", "postrm", "conffiles")
	if strings.Contains(info, "License:") || strings.Contains(info, "passwd") {
		t.Errorf("the control file has a License field or depends on passwd:\n%s", info)
	}
	files := output(t, dpkgDeb, "--contents", deb)
	contains(t, "dpkg-deb --contents", files,
		"./usr/bin/federate-agent", "./usr/lib/systemd/system/federate-agent.service",
		"./usr/lib/sysusers.d/federate-agent.conf", "./usr/lib/tmpfiles.d/federate-agent.conf",
		"./usr/share/doc/federate-agent/copyright", "./usr/share/doc/federate-agent/changelog.Debian.gz",
		"./usr/share/man/man1/federate-agent.1.gz", "./usr/share/lintian/overrides/federate-agent",
		"./etc/federate/agent.env", "./etc/federate/sidecar.yaml", "./var/lib/federate-agent/")
	if !regexp.MustCompile(`-rwxr-xr-x root/root .* \./usr/bin/federate-agent`).MatchString(files) {
		t.Errorf("the binary is not mode 0755 root/root:\n%s", files)
	}
	dir := t.TempDir()
	output(t, dpkgDeb, "--control", deb, dir)
	got, err := os.ReadFile(filepath.Join(dir, "conffiles"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "/etc/federate/agent.env\n/etc/federate/sidecar.yaml\n" {
		t.Errorf("conffiles = %q, want both files in /etc/federate", got)
	}
	postinst, err := os.ReadFile(filepath.Join(dir, "postinst"))
	if err != nil || !strings.Contains(string(postinst), "systemd-sysusers") {
		t.Errorf("postinst does not create the user with systemd-sysusers: %v\n%s", err, postinst)
	}
}

// The rpm has rpm's conventional name, which the documented
// 'rpm -i federate-agent-*.rpm' matches, and needs what the rpm families
// create users with.
func TestRPMIsNamedAndListsWhatItInstalls(t *testing.T) {
	rpmTool := tool(t, "rpm", "rpm")
	deb, rpm := build(t, "1.2.0")
	if ok, _ := filepath.Match("federate-agent-*.rpm", filepath.Base(rpm)); !ok {
		t.Errorf("'rpm -i federate-agent-*.rpm' does not match %s", filepath.Base(rpm))
	}
	if ok, _ := filepath.Match("federate-agent-*.rpm", filepath.Base(deb)); ok {
		t.Errorf("'rpm -i federate-agent-*.rpm' matches the .deb %s", filepath.Base(deb))
	}
	info := output(t, rpmTool, "-qip", rpm)
	contains(t, "rpm -qip", info, "Name        : federate-agent", "Version     : 1.2.0", "Release     : 1", "Architecture: x86_64", "License     : Apache-2.0")
	if requires := output(t, rpmTool, "-qp", "--requires", rpm); !regexp.MustCompile(`(?m)^systemd$`).MatchString(requires) || strings.Contains(requires, "passwd") {
		t.Errorf("rpm requires:\n%s\nwant systemd (systemd-sysusers), not Debian's passwd", requires)
	}
	files := output(t, rpmTool, "-qlp", rpm)
	contains(t, "rpm -qlp", files,
		"/usr/bin/federate-agent", "/usr/lib/systemd/system/federate-agent.service",
		"/usr/lib/sysusers.d/federate-agent.conf", "/usr/lib/tmpfiles.d/federate-agent.conf",
		"/usr/share/licenses/federate-agent/copyright", "/usr/share/man/man1/federate-agent.1.gz",
		"/etc/federate/agent.env", "/etc/federate/sidecar.yaml", "/var/lib/federate-agent")
	if strings.Contains(files, "changelog.Debian") || strings.Contains(files, "lintian") {
		t.Errorf("the rpm carries Debian's files:\n%s", files)
	}
	config := output(t, rpmTool, "-qcp", rpm)
	contains(t, "rpm -qcp", config, "/etc/federate/agent.env", "/etc/federate/sidecar.yaml")
	if strings.Contains(config, "/usr/bin") {
		t.Errorf("the binary is marked as a config file:\n%s", config)
	}
	if license := output(t, rpmTool, "-qp", "--licensefiles", rpm); !strings.Contains(license, "/usr/share/licenses/federate-agent/copyright") {
		t.Errorf("no %%license file:\n%s", license)
	}
	scripts := output(t, rpmTool, "-qp", "--scripts", rpm)
	contains(t, "rpm --scripts", scripts, "postinstall scriptlet", "systemd-sysusers", "preuninstall scriptlet", "postuninstall scriptlet", "userdel")
	// %config(noreplace): rpm's file flags carry 'n' for noreplace.
	flags := output(t, rpmTool, "-qp", "--qf", `[%{FILEFLAGS:fflags} %{FILENAMES}\n]`, rpm)
	for _, f := range []string{"/etc/federate/agent.env", "/etc/federate/sidecar.yaml"} {
		if !regexp.MustCompile(`(?m)^cn ` + regexp.QuoteMeta(f) + `$`).MatchString(flags) {
			t.Errorf("%s is not %%config(noreplace):\n%s", f, flags)
		}
	}
}

// The unit passes systemd's own checks, and its hardening keeps the
// exposure that 'systemd-analyze security' reports low.
func TestUnitVerifiesAndIsHardened(t *testing.T) {
	analyze := tool(t, "systemd-analyze", "systemd")
	unit, err := os.ReadFile("files/federate-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Restart=always", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "User=federate-agent"} {
		if !strings.Contains(string(unit), want+"\n") {
			t.Errorf("the unit lacks %s", want)
		}
	}
	// verify checks that ExecStart exists, so point it at a stand-in.
	dir := t.TempDir()
	bin := filepath.Join(dir, "federate-agent")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "federate-agent.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), BinaryPath, bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	output(t, analyze, "verify", path)
	out := output(t, analyze, "security", "--offline=yes", "--threshold=30", path)
	m := regexp.MustCompile(`Overall exposure level for federate-agent.service: ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	if level, _ := strconv.ParseFloat(m[1], 64); level > 3 {
		t.Errorf("exposure level %s, want at most 3:\n%s", m[1], out)
	}
}

func TestVersion(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"v1.2.0", "1.2.0"},
		{"1.2.0", "1.2.0"},
		{"v1.2.0-3-gabc1234", "1.2.0+3.gabc1234"},
		{"v1.2.0-3-gabc1234-dirty", "1.2.0+3.gabc1234.dirty"},
		{"8577b9d", "0.0.0+g8577b9d"},
		{"8577b9d-dirty", "0.0.0+g8577b9d.dirty"},
	} {
		got, err := Version(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Version(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "release one", "v1.2.0;rm"} {
		if _, err := Version(bad); err == nil {
			t.Errorf("Version(%q) succeeded", bad)
		}
	}
}

func TestBuildNamesAMissingBinary(t *testing.T) {
	_, err := Build(Options{Binary: filepath.Join(t.TempDir(), "nope"), Version: "1.0.0", FilesDir: "files", OutDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "nope") || !strings.Contains(err.Error(), "make packages") {
		t.Errorf("err = %v, want the missing path and what to do", err)
	}
}

// Packages ship stripped binaries: a Go program built with its symbol
// table is refused, with how to strip it.
func TestBuildRefusesAnUnstrippedBinary(t *testing.T) {
	src := t.TempDir()
	for name, content := range map[string]string{
		"go.mod":  "module hello\n\ngo 1.22\n",
		"main.go": "package main\n\nfunc main() { println(\"hello\") }\n",
	} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(src, "federate-agent")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out := t.TempDir()
	_, err := Build(Options{Binary: bin, Version: "1.0.0", FilesDir: "files", OutDir: out})
	if err == nil || !strings.Contains(err.Error(), "not stripped") || !strings.Contains(err.Error(), "-ldflags='-s -w'") {
		t.Errorf("err = %v, want a refusal that says how to strip the binary", err)
	}
	if left, _ := os.ReadDir(out); len(left) > 0 {
		t.Errorf("a refused build left %d files in the output directory", len(left))
	}
}
