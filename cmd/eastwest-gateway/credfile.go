package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/federate/federate/internal/retry"
	"github.com/federate/federate/trust"
)

// credentialCheck is how often the credential file is compared with what
// was last read or written: kubelet replaces a mounted Secret's files
// within about a minute of a change.
const credentialCheck = 10 * time.Second

// credentialFile keeps the gateway's credential and its file in step:
// renewals are written to the file, unless it is read-only (a mounted
// Secret, which the control plane refreshes), and a newer credential
// written there by someone else is taken up.
type credentialFile struct {
	path string
	cred *trust.Credential
	log  *slog.Logger

	mu       sync.Mutex
	last     []byte // the file's content as last read or written
	readOnly bool
}

func newCredentialFile(path string, cred *trust.Credential, log *slog.Logger) *credentialFile {
	last, _ := os.ReadFile(path)
	return &credentialFile{path: path, cred: cred, log: log, last: last}
}

// saveRenewal writes a renewed credential to the file. A read-only file is
// reported once at info, and renewals then stay in memory.
func (f *credentialFile) saveRenewal(c *trust.Credential) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readOnly {
		return
	}
	data, err := c.MarshalPEM()
	if err == nil {
		err = trust.WriteFileAtomic(f.path, data, 0o600)
	}
	if err == nil {
		f.last = data
		return
	}
	f.saveFailed(err)
}

// saveFailed logs a failed save: once at info for a read-only file, after
// which renewals are no longer written, else as an error.
func (f *credentialFile) saveFailed(err error) {
	switch {
	case errors.Is(err, syscall.EROFS) || errors.Is(err, fs.ErrPermission):
		f.readOnly = true
		f.log.Info("the credential file is read-only: renewals stay in memory, and the file is re-read when it changes (in Kubernetes the control plane refreshes the gateway Secret)", "path", f.path)
	default:
		f.log.Error("save renewed credential", "path", f.path, "err", err)
	}
}

// watch re-reads the file when its content changes and takes up the
// credential in it if that outlives the one in use, until ctx ends.
func (f *credentialFile) watch(ctx context.Context) error {
	for retry.Sleep(ctx, credentialCheck, nil) {
		f.reload()
	}
	return nil
}

func (f *credentialFile) reload() {
	data, err := os.ReadFile(f.path)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil || bytes.Equal(data, f.last) {
		return
	}
	f.last = data
	c, err := trust.LoadCredential(f.path)
	if err != nil {
		f.log.Warn("the credential file changed but cannot be used; keeping the credential in use", "path", f.path, "err", err)
		return
	}
	if c.ID() != f.cred.ID() || !c.Expiry().After(f.cred.Expiry()) {
		return
	}
	svid, _ := c.GetX509SVID()
	if err := f.cred.Set(svid.Certificates, svid.PrivateKey); err != nil {
		f.log.Warn("take up the changed credential file", "path", f.path, "err", err)
		return
	}
	f.log.Info("took up the credential from the changed file", "path", f.path, "expires", c.Expiry())
}
