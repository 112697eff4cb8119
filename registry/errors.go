package registry

import "errors"

var (
	// ErrStale means a record is not newer than the copy already held.
	ErrStale = errors.New("registry: record is not newer than the stored copy")
	// ErrBadSignature means a record's signature or signer does not verify.
	ErrBadSignature = errors.New("registry: record signature does not verify")
	// ErrWrongOwner means a record claims a cluster other than its signer's.
	ErrWrongOwner = errors.New("registry: record is not signed by its cluster")
	// ErrTooLarge means a record exceeds MaxRecordBytes.
	ErrTooLarge = errors.New("registry: record too large")
	// ErrRevoked means a record's signer belongs to a removed cluster.
	ErrRevoked = errors.New("registry: signer was revoked")
	// ErrInvalid means a record is malformed.
	ErrInvalid = errors.New("registry: invalid record")
	// ErrInvalidLocality means a locality (or a locality pattern) is not
	// in the region/zone/subzone form.
	ErrInvalidLocality = errors.New("registry: invalid locality")
)
