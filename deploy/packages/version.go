package packages

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

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

const maintainer = "federate maintainers <maintainers@federate.dev>"

// changelog is the Debian changelog of the package: one entry, for
// version, dated at.
func changelog(version string, at time.Time) []byte {
	var text bytes.Buffer
	fmt.Fprintf(&text, "%s (%s-%s) unstable; urgency=medium\n\n", Name, version, Release)
	fmt.Fprintf(&text, "  * federate-agent %s, built from https://github.com/federate/federate.\n\n", version)
	fmt.Fprintf(&text, " -- %s  %s\n", maintainer, at.UTC().Format(time.RFC1123Z))
	return text.Bytes()
}

// writeGzip writes data gzipped, as Debian wants documentation: at the
// best compression, and with no name or time in the header, so that the
// package is reproducible.
func writeGzip(path string, data []byte) error {
	var gz bytes.Buffer
	w, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, gz.Bytes(), 0o644)
}

// checkStripped refuses an ELF binary that still has its symbol table or
// debugging information: packages ship stripped binaries (Debian policy
// 10.1).
func checkStripped(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return nil // not ELF: a script, which has nothing to strip
	}
	defer f.Close()
	for _, name := range []string{".symtab", ".debug_info", ".zdebug_info"} {
		if f.Section(name) != nil {
			return fmt.Errorf("packages: %s is not stripped (it has %s): build it with -ldflags='-s -w', as 'make packages' does, or run strip on it", path, name)
		}
	}
	return nil
}
