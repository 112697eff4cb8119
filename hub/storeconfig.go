package hub

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/federate/federate/registry/store"
)

// validateStore checks the store settings; replicas need etcd and a CA
// file, since the CA key is never written to etcd.
func (c *Config) validateStore() error {
	switch c.Store {
	case "", StoreBolt:
		c.Store = StoreBolt
		return nil
	case StoreEtcd:
		if err := c.Etcd.validate(); err != nil {
			return err
		}
		if c.CAFile == "" {
			return fmt.Errorf("hub: --store etcd needs --ca-file, the mesh CA every replica mounts; create it once with 'federate hub create-ca --mesh %s --out FILE'", c.Mesh)
		}
		return nil
	default:
		return fmt.Errorf("hub: unknown store %q; use %s (one hub) or %s (replicas)", c.Store, StoreBolt, StoreEtcd)
	}
}

func (s *Server) openBackend(ctx context.Context) (backend, error) {
	if s.cfg.Store == StoreEtcd {
		return openEtcd(ctx, s.cfg.Etcd)
	}
	st, err := store.Open(filepath.Join(s.cfg.DataDir, StoreFile))
	if de, ok := errors.AsType[*store.DamagedError](err); ok {
		return nil, fmt.Errorf("hub: store %s is damaged (%v); it holds the mesh CA, the cluster credentials and the join tokens: "+
			"stop the hub and restore the file from a backup. Moving it aside starts a new mesh, which every cluster must join again", de.Path, de.Cause)
	}
	if err != nil {
		return nil, err
	}
	return &boltBackend{st: st}, nil
}
