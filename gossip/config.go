package gossip

import (
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
	"github.com/hashicorp/memberlist"
)

// memberlistConfig is memberlist's configuration for this member: its
// profile's timers, the mTLS transport, and what memberlist does by
// default that costs here without helping.
func (g *Node) memberlistConfig() (*memberlist.Config, error) {
	var conf *memberlist.Config
	switch g.cfg.Profile {
	case "", "wan":
		conf = memberlist.DefaultWANConfig()
	case "lan":
		conf = memberlist.DefaultLANConfig()
	default:
		return nil, fmt.Errorf("gossip: gossip profile %q: want wan or lan", g.cfg.Profile)
	}
	if g.cfg.Credential == nil {
		return nil, errors.New("gossip: gossip needs the member's credential")
	}
	if window := ConfirmWindow * g.cfg.HeartbeatInterval; g.cfg.IdleTimeout <= window {
		return nil, fmt.Errorf("gossip: idle timeout %s must exceed the confirmation window of %s (%d heartbeat intervals): raise it", g.cfg.IdleTimeout, window, ConfirmWindow)
	}
	td := g.td
	bundle := trust.Bundle(td, g.cfg.CA...)
	transport, err := newTLSTransport(transportConfig{
		Bind: g.cfg.Bind, Advertise: g.cfg.Advertise,
		Server:    trust.MTLSServer(g.cfg.Credential, bundle, membership.AuthorizeGossip(td), g.log),
		Client:    trust.MTLSClient(g.cfg.Credential, bundle, membership.AuthorizeGossip(td), g.log),
		LocalName: g.local.Name, Guard: g.guard, IdleTimeout: g.cfg.IdleTimeout, Log: g.log,
	})
	if err != nil {
		return nil, err
	}
	conf.Transport = transport
	conf.Name = g.local.Name
	conf.Label = g.cfg.Label
	conf.Delegate = (*gossipDelegate)(g)
	conf.Events = (*gossipEvents)(g)
	conf.Alive = (*gossipAlive)(g)
	conf.Logger = log.New(debugWriter{g.log}, "", 0)
	conf.DeadNodeReclaimTime = 30 * time.Second
	// memberlist compresses every message with LZW, allocating a fresh
	// 16 KiB table each time: with messages of a few hundred bytes over
	// TLS this bought nothing and cost a third of the CPU of 40 members
	// in one process, mostly in garbage collection. Members that still
	// compress are understood: receivers decode either form.
	conf.EnableCompression = false
	// memberlist follows a ping that was not answered in time with a ping
	// over a fresh stream, for members that UDP cannot reach. Packets here
	// already travel over TCP, so the stream adds nothing but a TLS
	// handshake, exactly when the peer or this member is overloaded.
	// Indirect probes through other members remain, and liveness rests on
	// heartbeats (heartbeat.go) in any case.
	conf.DisableTcpPings = true
	return conf, nil
}
