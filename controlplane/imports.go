package controlplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/file"
	"github.com/federate/federate/registry/kube"
)

// importSources merges what the cluster imports from where it is named:
// the explicit list (Config.Imports, SetImports), the cluster's own
// ServiceImports, its Istio Sidecars and exportTo, the config directory's
// import objects and the VM agents' outbound lists. The union is the
// scope; "*" in any of them is every service.
type importSources struct {
	mu        sync.Mutex
	explicit  []string // nil: not given
	kube      []string // hostnames the ServiceImports name
	fromKube  bool     // Config.ImportServiceImports
	istio     []string // hostnames the Sidecars and exportTo name
	fromIstio bool     // Config.ImportIstio
	file      file.Imports
	agents    []string // the connected agents' outbound hosts
}

func (s *importSources) init(cfg Config) {
	s.explicit = slices.Clone(cfg.Imports)
	s.fromKube = cfg.ImportServiceImports
	s.fromIstio = cfg.ImportIstio
}

// scope is what the cluster imports: every service unless a list, the
// ServiceImports, the Istio objects or the config directory name the
// services. The agents' outbound lists add to a scope; alone they do not
// make one, so that a VM joining never narrows what a cluster imports.
func (s *importSources) scope() *registry.Scope {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.explicit == nil && !s.fromKube && !s.fromIstio && !s.file.Named {
		return nil
	}
	var hosts []string
	for _, l := range [][]string{s.explicit, s.kube, s.istio, s.file.Hosts, s.agents} {
		hosts = append(hosts, l...)
	}
	return registry.NewScope(hosts)
}

// SetImports replaces the explicit import list (nil or "*": every service,
// unless another source names some) while the control plane runs: the
// member forgets what it no longer imports and the hub sends the new
// imports.
func (c *ControlPlane) SetImports(ctx context.Context, hosts []string) error {
	if err := registry.CheckImports(hosts); err != nil {
		return err
	}
	c.imports.mu.Lock()
	c.imports.explicit = slices.Clone(hosts)
	c.imports.mu.Unlock()
	return c.applyImports(ctx)
}

// setSourceImports changes one source's part of the imports with set and
// applies the result; name says which source, in the log.
func (c *ControlPlane) setSourceImports(ctx context.Context, name string, set func(*importSources)) {
	c.imports.mu.Lock()
	set(&c.imports)
	c.imports.mu.Unlock()
	if err := c.applyImports(ctx); err != nil && ctx.Err() == nil {
		c.log.Error("apply the imports "+name+" name", "err", err)
	}
}

// setKubeImports takes the hostnames the cluster's ServiceImports name.
func (c *ControlPlane) setKubeImports(ctx context.Context, hosts []string) {
	c.setSourceImports(ctx, "ServiceImports", func(s *importSources) { s.kube = hosts })
}

// setIstioImports takes the hostnames the cluster's Sidecars and exportTo
// name.
func (c *ControlPlane) setIstioImports(ctx context.Context, hosts []string) {
	c.setSourceImports(ctx, "Istio Sidecars and exportTo", func(s *importSources) { s.istio = hosts })
}

// setAgentImports takes the VM agents' outbound hosts, when they changed.
func (c *ControlPlane) setAgentImports(ctx context.Context, hosts []string) {
	c.imports.mu.Lock()
	same := slices.Equal(c.imports.agents, hosts)
	c.imports.mu.Unlock()
	if !same {
		c.setSourceImports(ctx, "VM agents", func(s *importSources) { s.agents = hosts })
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

// loadImports reads what the ServiceImports, the Istio objects and the
// config directory name before the member starts, so that a restart keeps
// the imports they name instead of forgetting them until the informers
// sync. A config directory whose import objects do not parse stops the
// start, as the file source does: the imports they named are not known.
func (c *ControlPlane) loadImports(ctx context.Context, dir *file.ImportDir) error {
	if dir != nil {
		imports, err := dir.Read()
		if err == nil {
			err = dir.Problems()
		}
		if err != nil {
			return fmt.Errorf("controlplane: the imports of the config directory: %w", err)
		}
		c.setSourceImportsBeforeStart(func(s *importSources) { s.file = imports })
	}
	if c.cfg.ImportServiceImports {
		hosts, err := kube.RequestedImports(ctx, c.cfg.Kube.Config, "")
		if err != nil {
			c.log.Warn("read the ServiceImports before starting: the imports they name follow once the informers sync", "err", err)
		} else {
			c.setSourceImportsBeforeStart(func(s *importSources) { s.kube = hosts })
		}
	}
	if c.cfg.ImportIstio {
		hosts, err := kube.IstioImports(ctx, c.cfg.Kube.Config, "")
		if err != nil {
			c.log.Warn("read the Istio Sidecars and Services before starting: the imports they name follow once the informers sync", "err", err)
		} else {
			c.setSourceImportsBeforeStart(func(s *importSources) { s.istio = hosts })
		}
	}
	return nil
}

func (c *ControlPlane) setSourceImportsBeforeStart(set func(*importSources)) {
	c.imports.mu.Lock()
	set(&c.imports)
	c.imports.mu.Unlock()
}

// followImportFile reads the config directory's imports every interval
// and applies them when they change; a file that breaks keeps what it
// named (file.ImportDir).
func (c *ControlPlane) followImportFile(ctx context.Context, dir *file.ImportDir) {
	interval := c.cfg.ConfigInterval
	if interval <= 0 {
		interval = file.DefaultInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var failing string // the listing error logged, until the directory lists again
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		imports, err := dir.Read()
		if err != nil {
			if msg := err.Error(); msg != failing {
				failing = msg
				c.log.Warn("imports: the config directory does not list; its imports stay as they were", "dir", c.cfg.ConfigDir, "err", err)
			}
			continue
		}
		if failing != "" {
			failing = ""
			c.log.Info("imports: the config directory lists again", "dir", c.cfg.ConfigDir)
		}
		c.imports.mu.Lock()
		same := imports.Named == c.imports.file.Named && slices.Equal(imports.Hosts, c.imports.file.Hosts)
		c.imports.mu.Unlock()
		if !same {
			c.setSourceImports(ctx, "the config directory", func(s *importSources) { s.file = imports })
		}
	}
}
