package routing

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// DestinationRules come from the config directory as the file source reads
// it; a file that does not read or parse keeps the rules loaded before,
// and status and the log name it.
func TestRulesFromConfigDirectory(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	r := &Routing{cfg: Config{ConfigDir: dir}, log: slog.New(slog.NewTextHandler(&logs, nil))}
	load := func(prev ruleSet) ruleSet {
		files, err := r.readRules()
		return r.loadRules(files, err, prev)
	}
	write("order.yaml", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: order, namespace: shop}\nspec: {host: order}\n")
	write(".draft.yaml", "kind: [")
	write("notes.txt", "kind: [")
	rules := load(ruleSet{})
	if len(rules.rules) != 1 || rules.loadErr != "" {
		t.Fatalf("rules %v, error %q; want order's rule", rules.rules, rules.loadErr)
	}

	write("split.yaml", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: split}\nspec: {}\n")
	rules = load(rules)
	split := filepath.Join(dir, "split.yaml")
	if len(rules.rules) != 1 || !strings.HasPrefix(rules.loadErr, split+": ") {
		t.Fatalf("rules %v, error %q; want order's rule kept and an error naming %s", rules.rules, rules.loadErr, split)
	}
	if !strings.Contains(logs.String(), split) {
		t.Errorf("the log does not name %s:\n%s", split, logs.String())
	}

	if err := os.Remove(split); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "gone.yaml")
	if err := os.Symlink(filepath.Join(dir, "absent"), dangling); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	rules = load(rules)
	if len(rules.rules) != 1 || !strings.Contains(rules.loadErr, dangling) || strings.Contains(rules.loadErr, "\n") {
		t.Fatalf("rules %v, error %q; want order's rule kept and a one-line error naming %s", rules.rules, rules.loadErr, dangling)
	}
	if !strings.Contains(logs.String(), dangling) {
		t.Errorf("the log does not name %s:\n%s", dangling, logs.String())
	}
}
