package controlplane

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/kube"
)

// importSources merges what the cluster imports from where it is named:
// the explicit list (Config.Imports, SetImports) and the cluster's own
// ServiceImports.
type importSources struct {
	mu       sync.Mutex
	explicit []string // nil: not given
	kube     []string // hostnames the ServiceImports name
	fromKube bool     // Config.ImportServiceImports
}

func (s *importSources) init(cfg Config) {
	s.explicit = slices.Clone(cfg.Imports)
	s.fromKube = cfg.ImportServiceImports
}

// scope is what the cluster imports: every service unless a list or the
// ServiceImports name the services.
func (s *importSources) scope() *registry.Scope {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.explicit == nil && !s.fromKube {
		return nil
	}
	return registry.NewScope(append(append([]string{}, s.explicit...), s.kube...))
}

// SetImports replaces the explicit import list (nil or "*": every service,
// unless ServiceImports name some) while the control plane runs: the member
// forgets what it no longer imports and the hub sends the new imports.
func (c *ControlPlane) SetImports(ctx context.Context, hosts []string) error {
	if err := registry.CheckImports(hosts); err != nil {
		return err
	}
	c.imports.mu.Lock()
	c.imports.explicit = slices.Clone(hosts)
	c.imports.mu.Unlock()
	return c.applyImports(ctx)
}

// setKubeImports takes the hostnames the cluster's ServiceImports name.
func (c *ControlPlane) setKubeImports(ctx context.Context, hosts []string) {
	c.imports.mu.Lock()
	c.imports.kube = hosts
	c.imports.mu.Unlock()
	if err := c.applyImports(ctx); err != nil && ctx.Err() == nil {
		c.log.Error("apply the imports ServiceImports name", "err", err)
	}
}

func (c *ControlPlane) applyImports(ctx context.Context) error {
	select {
	case <-c.ready:
	default:
		return errors.New("controlplane: the control plane is not running yet; pass the imports in Config.Imports")
	}
	return c.member.SetImports(ctx, c.imports.scope())
}

// loadKubeImports reads what the ServiceImports name before the member
// starts, so that a restart keeps the imports they name instead of
// forgetting them until the informers sync.
func (c *ControlPlane) loadKubeImports(ctx context.Context) {
	if !c.cfg.ImportServiceImports {
		return
	}
	hosts, err := kube.RequestedImports(ctx, c.cfg.Kube.Config, "")
	if err != nil {
		c.log.Warn("read the ServiceImports before starting: the imports they name follow once the informers sync", "err", err)
		return
	}
	c.imports.mu.Lock()
	c.imports.kube = hosts
	c.imports.mu.Unlock()
}
