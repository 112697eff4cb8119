package main

import (
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// externalFlag collects --import-trust-domain values.
type externalFlag []hub.ExternalTrustDomain

func (e *externalFlag) String() string { return fmt.Sprint(len(*e)) }

// Type names the value in --help.
func (e *externalFlag) Type() string { return "spec" }

// Set parses td=NAME,url=URL,profile=https_spiffe|https_web[,endpoint-id=ID][,bundle=FILE][,ca=FILE][,refresh=DURATION].
func (e *externalFlag) Set(v string) error {
	var ext hub.ExternalTrustDomain
	ext.Profile = hub.ProfileHTTPSSPIFFE
	for part := range strings.SplitSeq(v, ",") {
		key, val, ok := strings.Cut(part, "=")
		if !ok {
			return fmt.Errorf("%q: want key=value", part)
		}
		var err error
		switch key {
		case "td":
			ext.TrustDomain, err = spiffeid.TrustDomainFromString(val)
		case "url":
			ext.URL = val
		case "profile":
			ext.Profile = val
		case "endpoint-id":
			ext.EndpointID, err = spiffeid.FromString(val)
		case "bundle":
			var data []byte
			if data, err = os.ReadFile(val); err == nil {
				ext.Bundle, err = trust.ParseBundle(ext.TrustDomain, data)
			}
		case "ca":
			var certs []*x509.Certificate
			if certs, err = trust.LoadCertificates(val); err == nil {
				ext.Roots = x509.NewCertPool()
				for _, c := range certs {
					ext.Roots.AddCert(c)
				}
			}
		case "refresh":
			if ext.MaxRefresh, err = time.ParseDuration(val); err == nil && ext.MaxRefresh < time.Second {
				err = fmt.Errorf("%s is below the 1s minimum", val)
			}
		default:
			return fmt.Errorf("unknown key %q: want td, url, profile, endpoint-id, bundle, ca or refresh", key)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	if err := ext.Validate(); err != nil {
		return err
	}
	*e = append(*e, ext)
	return nil
}
