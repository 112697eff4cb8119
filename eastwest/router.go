package eastwest

// Router maps the server name of a connection to where it may go. The
// xDS-driven routing table implements it; it must be safe for concurrent
// use and must not block, as every connection asks it once.
//
// A Router whose table arrives after the gateway starts (over xDS) may
// also have a method Loaded() <-chan struct{}, closed once its first table
// is in place: until then the gateway accepts no connection, so that
// connections made while it starts wait in the listen backlog instead of
// being refused as unknown names.
type Router interface {
	// Route returns the route for serverName (lower case, as the client
	// sent it in SNI). It returns an error wrapping ErrNoRoute when the
	// name is unknown or names a service that is not exported.
	Route(serverName string) (Route, error)
}

// Route is where connections for one server name go.
type Route struct {
	// Endpoints are upstream "host:port" addresses. The gateway tries them
	// in this order, skipping ejected ones, so the Router owns balancing
	// and locality preference.
	Endpoints []string
}
