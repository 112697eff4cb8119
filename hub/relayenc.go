package hub

import (
	"sync"
	"sync/atomic"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry/registrypb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"
)

// The recent updates keep their encodings for the subscribers still to
// send them, up to this many and this many bytes; a subscriber further
// behind encodes for itself.
const (
	encodedUpdates = 64
	encodedBytes   = 8 << 20
)

// relayEncoder encodes each relayed update once for every subscriber:
// without it, every subscriber stream marshalled (and sized) the same
// records again, so one change cost the hub as many encodings as there
// are clusters. Encodings are shared by the streams that send without
// compression, which is every member's; a compressed stream encodes its
// own.
type relayEncoder struct {
	mu    sync.Mutex
	byMsg map[*hubpb.SubscribeResponse]*encodedUpdate
	order []*hubpb.SubscribeResponse // oldest first
	bytes int                        // of the encodings held
	// For tests: updates sent through the shared encodings, and
	// encodings made.
	sends, encodes atomic.Int64
}

// encodedUpdate is one update as the batches sent for it.
type encodedUpdate struct {
	once    sync.Once
	batches []*grpc.PreparedMsg
	size    int // bytes encoded, set under relayEncoder.mu once known
	err     error
}

// send relays one update on stream, in batches as SendBatches cuts them.
func (e *relayEncoder) send(stream grpc.ServerStreamingServer[hubpb.SubscribeResponse], u *hubpb.SubscribeResponse) error {
	if !uncompressed(stream) {
		return sendRecords(stream, u.GetRecords())
	}
	enc := e.lookup(u)
	e.sends.Add(1)
	enc.once.Do(func() {
		e.encodes.Add(1)
		size := 0
		enc.err = membership.SendBatches(u.GetRecords(), func(b []*registrypb.SignedRecord, _ bool) error {
			msg := new(grpc.PreparedMsg)
			batch := &hubpb.SubscribeResponse{Records: b}
			if err := msg.Encode(stream, batch); err != nil {
				return err
			}
			size += proto.Size(batch)
			enc.batches = append(enc.batches, msg)
			return nil
		})
		e.held(u, enc, size)
	})
	if enc.err != nil {
		return sendRecords(stream, u.GetRecords())
	}
	for _, msg := range enc.batches {
		if err := stream.SendMsg(msg); err != nil {
			return err
		}
	}
	return nil
}

// lookup returns the shared encoding of u, making room for it.
func (e *relayEncoder) lookup(u *hubpb.SubscribeResponse) *encodedUpdate {
	e.mu.Lock()
	defer e.mu.Unlock()
	if enc := e.byMsg[u]; enc != nil {
		return enc
	}
	if e.byMsg == nil {
		e.byMsg = make(map[*hubpb.SubscribeResponse]*encodedUpdate)
	}
	for len(e.order) >= encodedUpdates {
		e.evictOldestLocked()
	}
	enc := &encodedUpdate{}
	e.byMsg[u] = enc
	e.order = append(e.order, u)
	return enc
}

// held counts an encoding's bytes, and drops the oldest encodings while
// they hold more than encodedBytes.
func (e *relayEncoder) held(u *hubpb.SubscribeResponse, enc *encodedUpdate, size int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.byMsg[u] != enc {
		return // dropped while it was encoded
	}
	enc.size = size
	e.bytes += size
	for e.bytes > encodedBytes && len(e.order) > 1 {
		e.evictOldestLocked()
	}
}

func (e *relayEncoder) evictOldestLocked() {
	e.bytes -= e.byMsg[e.order[0]].size
	delete(e.byMsg, e.order[0])
	e.order = e.order[1:]
}

// sendRecords sends records in batches, encoding them for this stream.
func sendRecords(stream grpc.ServerStreamingServer[hubpb.SubscribeResponse], recs []*registrypb.SignedRecord) error {
	return membership.SendBatches(recs, func(b []*registrypb.SignedRecord, _ bool) error {
		return stream.Send(&hubpb.SubscribeResponse{Records: b})
	})
}

// uncompressed reports whether the stream sends without compression, so
// that an encoding made for another such stream is valid on it.
func uncompressed(stream grpc.ServerStream) bool {
	st, ok := grpc.ServerTransportStreamFromContext(stream.Context()).(interface{ SendCompress() string })
	if !ok {
		return false
	}
	c := st.SendCompress()
	return c == "" || c == encoding.Identity
}
