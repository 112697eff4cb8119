// Package trust owns identity: certificate authorities, SPIFFE credentials
// (X.509-SVIDs) and their files, and the mTLS configurations every
// connection between federate components uses.
package trust
