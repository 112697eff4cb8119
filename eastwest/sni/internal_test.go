package sni

import (
	"errors"
	"testing"
)

func TestInternalRoundTrip(t *testing.T) {
	for _, c := range []Component{ControlPlane, Gossip} {
		name := Internal(c, "east")
		got, cluster, err := ParseInternal(name)
		if err != nil || got != c || cluster != "east" {
			t.Errorf("ParseInternal(%q) = %q, %q, %v", name, got, cluster, err)
		}
	}
	if Internal(Gossip, "west") != "gossip.west.federate.internal" {
		t.Errorf("Internal(Gossip, west) = %q", Internal(Gossip, "west"))
	}
}

func TestParseInternalRefuses(t *testing.T) {
	for _, name := range []string{
		"", "federate.internal", ".federate.internal", "gossip.federate.internal",
		"gossip..federate.internal", "kubelet.east.federate.internal", "gossip.a.b.federate.internal",
		"gossip.East.federate.internal", "outbound_.80_._.gossip.east.federate.internal.x",
		"gossip.east.federate.internal.", "controlplane.-east.federate.internal",
	} {
		if c, cl, err := ParseInternal(name); !errors.Is(err, ErrNotInternal) {
			t.Errorf("ParseInternal(%q) = %q, %q, %v; want ErrNotInternal", name, c, cl, err)
		}
	}
}
