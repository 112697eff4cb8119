package packages

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// scratchRoot is an empty root directory with what dpkg and the user
// tools need: a dpkg database and the user and group files.
func scratchRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	// The agent, chrooted here as its own user, must reach its files.
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
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
	return root
}

// dpkgRoot runs dpkg on root. The maintainer scripts run without chroot
// (--force-script-chrootless) and honour DPKG_ROOT, so the root needs no
// shell or tools of its own; it has no systemd package to satisfy
// Depends.
func dpkgRoot(t *testing.T, root string, args ...string) string {
	t.Helper()
	dpkg := tool(t, "dpkg", "dpkg")
	tool(t, "systemd-sysusers", "systemd")
	tool(t, "userdel", "passwd")
	return output(t, dpkg, append([]string{"--root=" + root, "--force-script-chrootless", "--force-depends", "--force-confold", "--log=/dev/null"}, args...)...)
}

// agentUser returns the uid and gid of the agent's user in root's files.
func agentUser(t *testing.T, root string) (uid, gid, shell string) {
	t.Helper()
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	m := regexp.MustCompile(`(?m)^federate-agent:x:(\d+):(\d+):[^:]*:/var/lib/federate-agent:(\S+)$`).FindStringSubmatch(string(passwd))
	if m == nil {
		t.Fatalf("no federate-agent user in the root's /etc/passwd:\n%s", passwd)
	}
	return m[1], m[2], m[3]
}

func owner(t *testing.T, root, path string) string {
	t.Helper()
	return strings.TrimSpace(output(t, "stat", "-c", "%u:%g %a", filepath.Join(root, path)))
}

// The .deb installs into a throwaway root: its user comes from sysusers.d,
// its directories and the files already in /etc/federate get their owner,
// group and mode from tmpfiles.d. An upgrade keeps an edited config file;
// a removal keeps the agent's identity; a purge removes its state, key,
// token and user.
func TestDebInstallsUpgradesAndPurges(t *testing.T) {
	root := scratchRoot(t)
	// A token copied in before the package, with the mode 0600 it was
	// written with: the install gives it the agent's group.
	if err := os.MkdirAll(filepath.Join(root, "etc/federate"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/federate/istio-token"), []byte("fedvm1.token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v1, _ := build(t, "1.0.0")
	dpkgRoot(t, root, "-i", v1)

	st, err := os.Stat(filepath.Join(root, "usr/bin/federate-agent"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("binary: %v %v", st, err)
	}
	uid, gid, shell := agentUser(t, root)
	if n := len(uid); uid == "0" || n > 3 {
		t.Errorf("uid %s is not a system uid", uid)
	}
	if !strings.HasSuffix(shell, "nologin") {
		t.Errorf("the user's shell is %s, want nologin", shell)
	}
	group, _ := os.ReadFile(filepath.Join(root, "etc/group"))
	if !regexp.MustCompile(`(?m)^federate-agent:x:` + gid + `:`).Match(group) {
		t.Errorf("no federate-agent group %s in /etc/group:\n%s", gid, group)
	}
	for path, want := range map[string]string{
		"var/lib/federate-agent":   uid + ":" + gid + " 750",
		"etc/federate":             "0:" + gid + " 750",
		"etc/federate/agent.env":   "0:" + gid + " 640",
		"etc/federate/istio-token": "0:" + gid + " 640",
	} {
		if got := owner(t, root, path); got != want {
			t.Errorf("/%s is %s, want %s", path, got, want)
		}
	}
	if st := dpkgRoot(t, root, "-s", "federate-agent"); !strings.Contains(st, "Status: install ok installed") {
		t.Errorf("dpkg -s:\n%s", st)
	}

	// An operator's edit survives an upgrade, and the user is not created twice.
	env := filepath.Join(root, "etc/federate/agent.env")
	if err := os.WriteFile(env, []byte("FEDERATE_AGENT_ARGS=--log-level debug\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	v2, _ := build(t, "1.0.1")
	dpkgRoot(t, root, "-i", v2)
	if got, _ := os.ReadFile(env); string(got) != "FEDERATE_AGENT_ARGS=--log-level debug\n" {
		t.Errorf("the upgrade replaced the edited agent.env: %q", got)
	}
	if st := dpkgRoot(t, root, "-s", "federate-agent"); !strings.Contains(st, "Version: 1.0.1-1") {
		t.Errorf("after the upgrade, dpkg -s:\n%s", st)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if n := len(regexp.MustCompile(`(?m)^federate-agent:`).FindAllString(string(passwd), -1)); n != 1 {
		t.Errorf("%d federate-agent users after the upgrade", n)
	}
	if u, _, _ := agentUser(t, root); u != uid {
		t.Errorf("the upgrade changed the agent's uid from %s to %s", uid, u)
	}

	// The agent's SVID and key, as it saves them.
	svid := filepath.Join(root, "var/lib/federate-agent/svid.pem")
	if err := os.WriteFile(svid, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dpkgRoot(t, root, "-r", "federate-agent")
	if _, err := os.Stat(svid); err != nil {
		t.Errorf("a removal (not a purge) lost the agent's SVID: %v", err)
	}
	agentUser(t, root)

	dpkgRoot(t, root, "--purge", "federate-agent")
	for _, gone := range []string{"var/lib/federate-agent", "etc/federate/istio-token", "etc/federate/agent.env", "etc/federate"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); err == nil {
			t.Errorf("the purge left /%s", gone)
		}
	}
	for _, f := range []string{"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"} {
		if data, _ := os.ReadFile(filepath.Join(root, f)); strings.Contains(string(data), "federate-agent") {
			t.Errorf("the purge left the agent in /%s:\n%s", f, data)
		}
	}
	if st, _ := os.ReadFile(filepath.Join(root, "var/lib/dpkg/status")); strings.Contains(string(st), "Package: federate-agent") {
		t.Errorf("dpkg still knows the package after the purge:\n%s", st)
	}
}

// lintian, Debian's package checker, finds no error or warning in the
// .deb of the agent as 'make packages' builds it (stripped); the few
// deliberate departures are overridden, each with its reason.
func TestDebIsLintianClean(t *testing.T) {
	lintian := tool(t, "lintian", "lintian")
	agent, _ := binaries(t)
	deb, _ := buildWith(t, agent, "1.2.3")
	out := output(t, lintian, "--no-cfg", "--pedantic", "--display-info", "--fail-on", "error,warning", deb)
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
			t.Errorf("lintian: %s", line)
		}
	}
	t.Logf("lintian:\n%s", out)
}
