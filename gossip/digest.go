package gossip

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net"
	"strconv"

	"github.com/federate/federate/registry"
	"github.com/hashicorp/memberlist"
)

// maxDigestBytes keeps a digest well inside memberlist's 512-byte node meta
// and one gossip packet.
const maxDigestBytes = 400

// digestRetransmitMult scales how often a digest is sent on, times the
// log of the number of members: 6 sends in a federation of up to 9. A
// member that is frozen or just died is still gossiped to for a while
// (memberlist's GossipToTheDeadTime), and what is sent to it, piggybacked
// on probes and gossip rounds alike, is lost: with memberlist's usual 3 or
// 4, a change now and then missed a peer until the next push/pull, 30 s or
// more later. Digests are a hundred bytes, and a newer one replaces an
// older one in the queue.
const digestRetransmitMult = 6

// maxStateBytes bounds the push/pull state a peer may send us.
const maxStateBytes = 256 << 10

// Digest is what a member gossips about itself: small enough for node meta,
// and enough for a peer to notice it is behind and know where to fetch.
type Digest struct {
	// Name is the memberlist node name: the cluster name, or "hub-<name>".
	Name    string `json:"n"`
	Cluster string `json:"c,omitempty"` // empty for a hub
	// Incarnation and Counter are the owner's slice version.
	Incarnation    uint64 `json:"i,omitempty"`
	Counter        uint64 `json:"v,omitempty"`
	BundleSequence uint64 `json:"b,omitempty"`
	// API is the member's federation API (Registry service) address.
	API     string `json:"a,omitempty"`
	Gateway string `json:"g,omitempty"`
}

// Version returns the digest's slice version.
func (d Digest) Version() *registry.Version {
	return &registry.Version{Incarnation: d.Incarnation, Counter: d.Counter}
}

func (d Digest) encode() []byte {
	b, _ := json.Marshal(d)
	return b
}

// DecodeDigest parses a gossiped digest.
func DecodeDigest(b []byte) (Digest, error) {
	var d Digest
	if len(b) > maxDigestBytes {
		return d, fmt.Errorf("gossip: gossip digest of %d bytes exceeds %d", len(b), maxDigestBytes)
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("gossip: gossip digest: %w", err)
	}
	if d.Name == "" {
		return d, fmt.Errorf("gossip: gossip digest without a member name")
	}
	if d.Cluster != "" {
		if err := registry.ValidClusterName(d.Cluster); err != nil {
			return d, fmt.Errorf("gossip: gossip digest: %w", err)
		}
	}
	// A node's name says whose it is (identity.go): "<cluster>-<suffix>",
	// or "hub-<suffix>" for a hub, which names no cluster.
	if owner := cmp.Or(d.Cluster, hubNodeBase); memberBase(d.Name) != owner {
		return d, fmt.Errorf("gossip: gossip digest of node %q claims cluster %q", d.Name, d.Cluster)
	}
	return d, nil
}

// digestBroadcast is a queued digest. It is named after its member, so
// that memberlist's queue replaces the member's queued digest in one map
// look-up: an unnamed broadcast is checked against every queued one, and
// each check decoded two digests, which with a hundred members queued was
// a hundred decodes for each digest heard. Only the newest digest of a
// member is ever queued (SetLocal, receive), so the newer one wins.
type digestBroadcast struct {
	name string
	msg  []byte
}

var _ memberlist.NamedBroadcast = digestBroadcast{}

func (b digestBroadcast) Name() string { return b.name }
func (b digestBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(digestBroadcast)
	return ok && o.name == b.name
}
func (b digestBroadcast) Message() []byte { return b.msg }
func (b digestBroadcast) Finished()       {}

type gossipDelegate Node

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.local.encode()
	if len(b) > limit {
		return nil
	}
	return b
}

func (d *gossipDelegate) NotifyMsg(b []byte) {
	(*Node)(d).deliver(append([]byte(nil), b...))
}

func (d *gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.queue.GetBroadcasts(overhead, limit)
}

// LocalState sends every digest we know: anti-entropy for missed broadcasts.
func (d *gossipDelegate) LocalState(bool) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	all := make([]Digest, 0, len(d.newest)+1)
	all = append(all, d.local)
	for _, dg := range d.newest {
		all = append(all, dg)
	}
	b, _ := json.Marshal(all)
	return b
}

func (d *gossipDelegate) MergeRemoteState(buf []byte, _ bool) {
	if len(buf) > maxStateBytes {
		return
	}
	var all []json.RawMessage
	if json.Unmarshal(buf, &all) != nil {
		return
	}
	for _, raw := range all {
		(*Node)(d).deliver(append([]byte(nil), raw...))
	}
}

// gossipEvents runs under memberlist's node lock: it copies what it needs.
type gossipEvents Node

func (e *gossipEvents) NotifyJoin(n *memberlist.Node)   { e.seen(n) }
func (e *gossipEvents) NotifyUpdate(n *memberlist.Node) { e.seen(n) }

func (e *gossipEvents) NotifyLeave(n *memberlist.Node) {
	e.mu.Lock()
	delete(e.members, n.Name)
	delete(e.aliveMeta, n.Name)
	e.mu.Unlock()
}

func (e *gossipEvents) seen(n *memberlist.Node) {
	meta := append([]byte(nil), n.Meta...)
	d, err := DecodeDigest(meta)
	if err != nil || d.Name != n.Name {
		d, meta = Digest{}, nil // NotifyAlive refused it; the node is not ours to list
	}
	st := MemberState{Digest: d, State: StateSuspect, Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))}
	e.mu.Lock()
	if n.Name != e.local.Name {
		e.members[n.Name] = st
	}
	e.mu.Unlock()
	if len(meta) > 0 {
		(*Node)(e).deliver(meta)
	}
}
