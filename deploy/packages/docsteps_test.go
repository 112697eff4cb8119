package packages

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/federate/federate/agent"
	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/controlplane/workloads"
	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/testport"
)

// docBlock returns the first fenced block of lang after heading in doc.
func docBlock(t *testing.T, doc, heading, lang string) string {
	t.Helper()
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("docs/vms.md has no heading %q", heading)
	}
	rest := doc[i:]
	start := strings.Index(rest, "\n```"+lang+"\n")
	if start < 0 {
		t.Fatalf("docs/vms.md has no %s block under %q", lang, heading)
	}
	rest = rest[start+len("\n```"+lang+"\n"):]
	end := strings.Index(rest, "\n```")
	if end < 0 {
		t.Fatalf("docs/vms.md: the %s block under %q does not end", lang, heading)
	}
	return rest[:end+1]
}

// commands splits a shell block into commands: continued lines joined,
// comments and sudo dropped, words split on white space (the documented
// steps quote nothing).
func commands(block string) [][]string {
	var out [][]string
	var line string
	sc := bufio.NewScanner(strings.NewReader(block))
	for sc.Scan() {
		text := sc.Text()
		if strings.HasSuffix(text, `\`) {
			line += strings.TrimSuffix(text, `\`) + " "
			continue
		}
		line += text
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		if f := strings.Fields(line); len(f) > 0 {
			if f[0] == "sudo" {
				f = f[1:]
			}
			out = append(out, f)
		}
		line = ""
	}
	return out
}

// flagValue returns the value of a flag in a command, or fails.
func flagValue(t *testing.T, cmd []string, name string) string {
	t.Helper()
	for i, a := range cmd {
		if a == name && i+1 < len(cmd) {
			return cmd[i+1]
		}
	}
	t.Fatalf("the documented command %q has no %s", strings.Join(cmd, " "), name)
	return ""
}

// The steps of docs/vms.md, run as written on a machine of the test's
// own: the administrator's 'federate vm configure' (with the test's hub
// and credential), then on the VM the .deb installed into a scratch root,
// the files installed as the documented line says, and the systemd unit's
// command started as the unit's user (chrooted into the root: the agent
// is static). The agent reads its token, bootstraps and registers with a
// real control plane through its gateway. Before that, the files copied
// with a plain cp, as the steps used to say, leave the token unreadable,
// and the agent stops saying how to install them.
func TestIntegrationDocumentedStepsStartTheAgentAsItsUser(t *testing.T) {
	buildBinaries()
	data, err := os.ReadFile("../../docs/vms.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	group := docBlock(t, doc, "## 1. Describe the group", "yaml")
	configure := commands(docBlock(t, doc, "## 2. Configure", "sh"))
	installBlock := docBlock(t, doc, "## 3. Install and start the agent", "sh")
	if len(configure) != 1 || strings.Join(configure[0][:3], " ") != "federate vm configure" {
		t.Fatalf("docs/vms.md step 2 is %q, want one 'federate vm configure'", configure)
	}

	tm := fedtest.NewMesh(t, gossip.Timers{StaleAfter: 3 * time.Second, DeadAfter: 5 * time.Second, ExpireAfter: 8 * time.Second})
	cluster := flagValue(t, configure[0], "--cluster")
	tm.Join(cluster)
	lis := fedtest.GatewayListener(t)
	// The cluster's services, from the docs' cross-cluster example.
	configDir := t.TempDir()
	services := docBlock(t, doc, "## The first cross-cluster call", "yaml")
	if err := os.WriteFile(filepath.Join(configDir, "payment.yaml"), []byte(services), 0o644); err != nil {
		t.Fatal(err)
	}
	cp := tm.StartControlPlane(cluster, controlplane.Config{Gateway: lis.Addr().String(), ConfigDir: configDir})
	tm.StartGateway(cp, lis, nil)

	// On the administrator's machine, in a directory of its own.
	agentBin, federate := binaries(t)
	deb, rpm := buildWith(t, agentBin, "1.2.3")
	admin := t.TempDir()
	if err := os.WriteFile(filepath.Join(admin, flagValue(t, configure[0], "-f")), []byte(group), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string(nil), configure[0][1:]...)
	for i := range args {
		switch {
		case i > 0 && args[i-1] == "--hub":
			args[i] = tm.HubAddr
		case i > 0 && args[i-1] == "--credential":
			args[i] = filepath.Join(tm.Dir, "hub", hub.AdminCredFile)
		}
	}
	// The hub lists the cluster's control plane once it has published.
	fedtest.EventuallyNil(t, 30*time.Second, "federate vm configure as documented", func() error {
		cmd := exec.Command(federate, args...)
		cmd.Dir = admin
		if out, err := cmd.CombinedOutput(); err != nil {
			return &buildError{out: string(out), err: err}
		}
		return nil
	})
	outDir := filepath.Join(admin, flagValue(t, configure[0], "-o"))

	// The rpm the comment names is the one built.
	if m := regexp.MustCompile(`rpm -i (\S+)`).FindStringSubmatch(installBlock); m == nil {
		t.Errorf("docs/vms.md step 3 names no rpm")
	} else if ok, _ := filepath.Match(m[1], filepath.Base(rpm)); !ok {
		t.Errorf("the documented 'rpm -i %s' does not match %s", m[1], filepath.Base(rpm))
	}

	root := scratchRoot(t)
	ranUnit := false
	for _, step := range commands(installBlock) {
		switch step[0] {
		case "dpkg":
			if len(step) != 3 || step[1] != "-i" {
				t.Fatalf("unexpected documented dpkg step %q", step)
			}
			if ok, _ := filepath.Match(step[2], filepath.Base(deb)); !ok {
				t.Fatalf("the documented 'dpkg -i %s' does not match %s", step[2], filepath.Base(deb))
			}
			dpkgRoot(t, root, "-i", deb)
			writeSidecar(t, root)
		case "install", "cp":
			// Whichever way the docs copy the files, they must work; a
			// plain cp first shows why cp alone does not.
			copyThenFail(t, root, outDir)
			output(t, step[0], onTheVM(t, root, admin, step[1:])...)
		case "systemctl":
			if strings.Join(step, " ") != "systemctl enable --now federate-agent" {
				t.Fatalf("unexpected documented systemctl step %q", step)
			}
			ranUnit = true
			p := startUnit(t, root)
			want := workloads.EntryName("payment-vm", "127.0.0.1")
			fedtest.Eventually(t, 30*time.Second, "the packaged agent registers "+want, func() bool {
				e := cp.Workloads().Entries()
				return len(e) == 1 && e[0].Name == want || p.exited()
			})
			if p.exited() {
				t.Fatalf("the agent exited:\n%s", p.out)
			}
			uid, gid, _ := agentUser(t, root)
			if got, want := owner(t, root, "var/lib/federate-agent/svid.pem"), uid+":"+gid+" 600"; got != want {
				t.Errorf("the agent's SVID is %s, want %s", got, want)
			}
			p.stop(t)
		default:
			t.Fatalf("docs/vms.md step 3 has %q, which this test does not know how to run on the VM", step)
		}
	}
	if !ranUnit {
		t.Fatal("docs/vms.md step 3 never starts the agent")
	}
}

// onTheVM maps a documented command's arguments to the scratch root:
// /etc paths into the root, the agent's group to its number there (the
// host does not know it), and globs of the administrator's files.
func onTheVM(t *testing.T, root, admin string, args []string) []string {
	t.Helper()
	_, gid, _ := agentUser(t, root)
	var out []string
	for i, a := range args {
		switch {
		case i > 0 && args[i-1] == "-g" && a == "federate-agent":
			out = append(out, gid)
		case strings.HasPrefix(a, "/etc/"):
			out = append(out, filepath.Join(root, a)+"/")
		case strings.Contains(a, "*"):
			matches, _ := filepath.Glob(filepath.Join(admin, a))
			if len(matches) == 0 {
				t.Fatalf("%s matches no file of 'federate vm configure'", a)
			}
			out = append(out, matches...)
		default:
			out = append(out, a)
		}
	}
	return out
}

// writeSidecar puts the sidecar's inbound listener on a free loopback
// port, as an operator writes sidecar.yaml: the default, 0.0.0.0:15006,
// may be taken on a shared test machine.
func writeSidecar(t *testing.T, root string) {
	t.Helper()
	_, portText, _ := strings.Cut(testport.Addr(t), ":")
	port, _ := strconv.Atoi(portText)
	sidecar := "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: payment-vm, namespace: shop}\nspec:\n" +
		"  ingress:\n  - port: {number: " + strconv.Itoa(port) + ", protocol: TLS, name: mtls}\n    bind: 127.0.0.1\n    captureMode: NONE\n"
	if err := os.WriteFile(filepath.Join(root, "etc/federate/sidecar.yaml"), []byte(sidecar), 0o640); err != nil {
		t.Fatal(err)
	}
}

// copyThenFail copies the files as a plain 'cp' does, keeping the token's
// mode 0600 and giving them to root, and checks that the agent stops at
// once, naming the file and the documented install line.
func copyThenFail(t *testing.T, root, outDir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(outDir, "*"))
	output(t, "cp", append(files, filepath.Join(root, "etc/federate")+"/")...)
	p := startUnit(t, root)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the agent kept running with an unreadable token:\n%s", p.out)
	}
	out := p.out.String()
	for _, want := range []string{"/etc/federate/istio-token: permission denied", "runs as user federate-agent", "sudo install -m 0640 -g federate-agent DIR/* /etc/federate/"} {
		if !strings.Contains(out, want) {
			t.Errorf("the agent's error does not say %q:\n%s", want, out)
		}
	}
	if p.err == nil {
		t.Error("the agent exited with status 0")
	}
}

// unitProcess is the agent started as the systemd unit would start it.
type unitProcess struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error // set before done is closed
}

func (p *unitProcess) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *unitProcess) stop(t *testing.T) {
	t.Helper()
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("the agent did not stop within 15s of SIGINT")
	}
}

// startUnit runs the unit's ExecStart, with its EnvironmentFile, as its
// User and Group, chrooted into root.
func startUnit(t *testing.T, root string) *unitProcess {
	t.Helper()
	unit, err := os.ReadFile(filepath.Join(root, UnitPath))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, line := range strings.Split(string(unit), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			keys[k] = v
		}
	}
	uid, gid, _ := agentUser(t, root)
	if keys["User"] != "federate-agent" || keys["Group"] != "federate-agent" {
		t.Fatalf("the unit runs as %s:%s, not the package's user", keys["User"], keys["Group"])
	}
	envData, err := os.ReadFile(filepath.Join(root, strings.TrimPrefix(keys["EnvironmentFile"], "-")))
	if err != nil {
		t.Fatal(err)
	}
	env, err := agent.ParseEnv(envData)
	if err != nil {
		t.Fatal(err)
	}
	var argv []string
	for _, w := range strings.Fields(keys["ExecStart"]) {
		if strings.HasPrefix(w, "$") {
			argv = append(argv, strings.Fields(env[w[1:]])...)
			continue
		}
		argv = append(argv, w)
	}
	u, _ := strconv.Atoi(uid)
	g, _ := strconv.Atoi(gid)
	p := &unitProcess{out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Dir = "/"
	p.cmd.Env = []string{"PATH=/usr/bin:/bin"}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     root,
		Credential: &syscall.Credential{Uid: uint32(u), Gid: uint32(g), Groups: []uint32{}},
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s in %s: %v", argv[0], root, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("agent output:\n%s", p.out)
		}
	})
	return p
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
