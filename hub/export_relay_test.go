package hub

// RelayEncodings returns how many relayed updates subscriber streams sent
// from shared encodings, and how many encodings were made for them.
func (s *Server) RelayEncodings() (sends, encodes int64) {
	return s.relayEnc.sends.Load(), s.relayEnc.encodes.Load()
}
