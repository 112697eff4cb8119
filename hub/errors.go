package hub

import "errors"

var (
	ErrTokenMalformed    = errors.New("hub: malformed join token")
	ErrTokenUnknown      = errors.New("hub: join token is not one this hub issued")
	ErrTokenWrongCluster = errors.New("hub: join token is for another cluster")
	ErrTokenUsed         = errors.New("hub: join token was already used")
	ErrTokenExpired      = errors.New("hub: join token expired")

	errNoSource = errors.New("hub: no reachable peer has the missing records")
)
