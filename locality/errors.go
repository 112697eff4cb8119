package locality

import "errors"

var (
	// ErrInvalidLocality means a locality or locality pattern does not parse.
	ErrInvalidLocality = errors.New("locality: invalid locality")
	// ErrInvalidRule means a DestinationRule is malformed or breaks one of
	// Istio's validation rules.
	ErrInvalidRule = errors.New("locality: invalid DestinationRule")
)
