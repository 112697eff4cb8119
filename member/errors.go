package member

import "errors"

var errNoSource = errors.New("member: no reachable peer has the missing records")
