package eastwest

import "errors"

var (
	// ErrNoRoute is what a Router returns, wrapped, for a server name it
	// does not route: unknown, or a service that is not exported.
	ErrNoRoute = errors.New("eastwest: no route for this server name: is the service exported?")

	// ErrNoRouter is New's error for a Config without a Router.
	ErrNoRouter = errors.New("eastwest: Config.Router is required: the gateway routes nothing without one")

	errNoEndpoints = errors.New("eastwest: the route has no endpoints")
)
