package membership

import "errors"

// Why a join token is refused.
var (
	ErrTokenMalformed    = errors.New("membership: malformed join token")
	ErrTokenUnknown      = errors.New("membership: join token is not one this hub issued")
	ErrTokenWrongCluster = errors.New("membership: join token is for another cluster")
	ErrTokenUsed         = errors.New("membership: join token was already used")
	ErrTokenExpired      = errors.New("membership: join token expired")
)
