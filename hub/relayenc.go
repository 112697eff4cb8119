package hub

import (
	"sync"
	"sync/atomic"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry/registrypb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
)

// encodedUpdates is how many recent updates keep their encoding for
// subscribers still to send them; one further behind encodes for itself.
const encodedUpdates = 64

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
	// For tests: updates sent through the shared encodings, and
	// encodings made.
	sends, encodes atomic.Int64
}

// encodedUpdate is one update as the batches sent for it.
type encodedUpdate struct {
	once    sync.Once
	batches []*grpc.PreparedMsg
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
		enc.err = membership.SendBatches(u.GetRecords(), func(b []*registrypb.SignedRecord, _ bool) error {
			msg := new(grpc.PreparedMsg)
			if err := msg.Encode(stream, &hubpb.SubscribeResponse{Records: b}); err != nil {
				return err
			}
			enc.batches = append(enc.batches, msg)
			return nil
		})
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
	if len(e.order) >= encodedUpdates {
		delete(e.byMsg, e.order[0])
		e.order = e.order[1:]
	}
	enc := &encodedUpdate{}
	e.byMsg[u] = enc
	e.order = append(e.order, u)
	return enc
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
