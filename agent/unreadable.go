package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os/user"
	"path/filepath"
)

// readError explains why the agent could not read a bootstrap file. The
// files are written on an administrator's machine and copied in as root,
// while the agent runs as its own user: a copy that keeps the token's mode
// 0600 leaves it unreadable, and the error says how to install the files.
func readError(path string, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return &FileError{Path: path, Err: err}
	}
	who, group := "this user", "federate-agent"
	if u, uerr := user.Current(); uerr == nil {
		who = "user " + u.Username
		if g, gerr := user.LookupGroupId(u.Gid); gerr == nil {
			group = g.Name
		}
	}
	return &FileError{Path: path, Err: fmt.Errorf("permission denied: the agent runs as %s, which may not read it; "+
		"install the files 'federate vm configure' wrote so that its group can: sudo install -m 0640 -g %s DIR/* %s/ (docs/vms.md)",
		who, group, filepath.Dir(path))}
}
