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
	paths, err := Build(Options{Binary: bin, Version: version, FilesDir: "files", OutDir: filepath.Join(dir, "dist"), MTime: time.Unix(1700000000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		filepath.Join(dir, "dist", "federate-agent_"+version+"_amd64.deb"),
		filepath.Join(dir, "dist", "federate-agent_"+version+"_amd64.rpm"),
	}
	if len(paths) != 2 || paths[0] != want[0] || paths[1] != want[1] {
		t.Fatalf("Build wrote %v, want %v", paths, want)
	}
	return paths[0], paths[1]
}

func TestDebListsBinaryUnitConfigAndScripts(t *testing.T) {
	dpkgDeb := tool(t, "dpkg-deb", "dpkg")
	deb, _ := build(t, "1.2.0")
	info := output(t, dpkgDeb, "--info", deb)
	contains(t, "dpkg-deb --info", info, "Package: federate-agent", "Version: 1.2.0-1", "Architecture: amd64", "postinst", "prerm", "conffiles")
	files := output(t, dpkgDeb, "--contents", deb)
	contains(t, "dpkg-deb --contents", files,
		"./usr/bin/federate-agent", "./usr/lib/systemd/system/federate-agent.service",
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
	if err != nil || !strings.Contains(string(postinst), "useradd") {
		t.Errorf("postinst does not create the user: %v\n%s", err, postinst)
	}
}

func TestRPMListsBinaryUnitConfigAndScripts(t *testing.T) {
	rpmTool := tool(t, "rpm", "rpm")
	_, rpm := build(t, "1.2.0")
	info := output(t, rpmTool, "-qip", rpm)
	contains(t, "rpm -qip", info, "Name        : federate-agent", "Version     : 1.2.0", "Architecture: x86_64")
	files := output(t, rpmTool, "-qlp", rpm)
	contains(t, "rpm -qlp", files,
		"/usr/bin/federate-agent", "/usr/lib/systemd/system/federate-agent.service",
		"/etc/federate/agent.env", "/etc/federate/sidecar.yaml", "/var/lib/federate-agent")
	config := output(t, rpmTool, "-qcp", rpm)
	contains(t, "rpm -qcp", config, "/etc/federate/agent.env", "/etc/federate/sidecar.yaml")
	if strings.Contains(config, "/usr/bin") {
		t.Errorf("the binary is marked as a config file:\n%s", config)
	}
	scripts := output(t, rpmTool, "-qp", "--scripts", rpm)
	contains(t, "rpm --scripts", scripts, "postinstall scriptlet", "useradd", "preuninstall scriptlet")
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

// The .deb installs into a throwaway root with dpkg --root. Its maintainer
// scripts run without chroot (--force-script-chrootless) and honour
// DPKG_ROOT, so the root needs no shell or tools of its own. An upgrade
// keeps an edited config file.
func TestDebInstallsIntoThrowawayRoot(t *testing.T) {
	dpkg := tool(t, "dpkg", "dpkg")
	tool(t, "useradd", "passwd")
	root := t.TempDir()
	for _, d := range []string{"etc", "var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{
		"var/lib/dpkg/status": "",
		"etc/passwd":          "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":           "root:x:0:\n",
		"etc/shadow":          "root:*:19000:0:99999:7:::\n",
		"etc/gshadow":         "root:*::\n",
	} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	install := func(deb string) {
		t.Helper()
		// The throwaway root has no passwd package to satisfy Depends.
		output(t, dpkg, "--root="+root, "--force-script-chrootless", "--force-depends", "--force-confold", "--log=/dev/null", "-i", deb)
	}
	v1, _ := build(t, "1.0.0")
	install(v1)

	st, err := os.Stat(filepath.Join(root, "usr/bin/federate-agent"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("binary: %v %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(root, "usr/lib/systemd/system/federate-agent.service")); err != nil {
		t.Fatalf("unit: %v", err)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	m := regexp.MustCompile(`(?m)^federate-agent:x:(\d+):(\d+):[^:]*:/var/lib/federate-agent:(\S+)$`).FindStringSubmatch(string(passwd))
	if m == nil {
		t.Fatalf("no federate-agent user in the root's /etc/passwd:\n%s", passwd)
	}
	if uid, _ := strconv.Atoi(m[1]); uid == 0 || uid >= 1000 {
		t.Errorf("uid %d is not a system uid", uid)
	}
	if !strings.HasSuffix(m[3], "nologin") {
		t.Errorf("the user's shell is %s, want nologin", m[3])
	}
	group, _ := os.ReadFile(filepath.Join(root, "etc/group"))
	if !regexp.MustCompile(`(?m)^federate-agent:x:` + m[2] + `:`).Match(group) {
		t.Errorf("no federate-agent group %s in /etc/group:\n%s", m[2], group)
	}
	owner := func(path string) string {
		t.Helper()
		return strings.TrimSpace(output(t, "stat", "-c", "%u:%g %a", filepath.Join(root, path)))
	}
	if got, want := owner("var/lib/federate-agent"), m[1]+":"+m[2]+" 750"; got != want {
		t.Errorf("/var/lib/federate-agent is %s, want %s", got, want)
	}
	if got, want := owner("etc/federate"), "0:"+m[2]+" 750"; got != want {
		t.Errorf("/etc/federate is %s, want %s", got, want)
	}
	if got, want := owner("etc/federate/agent.env"), "0:"+m[2]+" 640"; got != want {
		t.Errorf("/etc/federate/agent.env is %s, want %s", got, want)
	}
	if st := output(t, dpkg, "--root="+root, "-s", "federate-agent"); !strings.Contains(st, "Status: install ok installed") {
		t.Errorf("dpkg -s:\n%s", st)
	}

	// An operator's edit survives an upgrade, and the user is not created twice.
	env := filepath.Join(root, "etc/federate/agent.env")
	if err := os.WriteFile(env, []byte("FEDERATE_AGENT_ARGS=--log-level debug\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	v2, _ := build(t, "1.0.1")
	install(v2)
	if got, _ := os.ReadFile(env); string(got) != "FEDERATE_AGENT_ARGS=--log-level debug\n" {
		t.Errorf("the upgrade replaced the edited agent.env: %q", got)
	}
	if st := output(t, dpkg, "--root="+root, "-s", "federate-agent"); !strings.Contains(st, "Version: 1.0.1-1") {
		t.Errorf("after the upgrade, dpkg -s:\n%s", st)
	}
	passwd, _ = os.ReadFile(filepath.Join(root, "etc/passwd"))
	if n := len(regexp.MustCompile(`(?m)^federate-agent:`).FindAllString(string(passwd), -1)); n != 1 {
		t.Errorf("%d federate-agent users after the upgrade", n)
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
