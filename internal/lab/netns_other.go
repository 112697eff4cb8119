//go:build !linux

package lab

import (
	"context"
	"errors"
	"net"
)

// dialInNetns needs Linux's network namespaces: the isolated lab runs on
// Linux only.
func dialInNetns(context.Context, string, string, string) (net.Conn, error) {
	return nil, errors.New("lab: the isolated lab needs Linux network namespaces")
}
