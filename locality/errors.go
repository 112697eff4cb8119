package locality

import (
	"errors"

	"github.com/federate/federate/registry"
)

var (
	// ErrInvalidLocality means a locality or locality pattern does not
	// parse. It is registry.ErrInvalidLocality: the registry owns the
	// syntax, and errors.Is matches either name.
	ErrInvalidLocality = registry.ErrInvalidLocality
	// ErrInvalidRule means a DestinationRule is malformed or breaks one of
	// Istio's validation rules.
	ErrInvalidRule = errors.New("locality: invalid DestinationRule")
)
