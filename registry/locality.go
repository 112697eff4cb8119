package registry

import (
	"fmt"
	"strings"
	"unicode"
)

// localityForms is what an invalid locality's message suggests.
const localityForms = "use region, region/zone or region/zone/subzone"

// ParseLocality parses Istio's "region/zone/subzone" form; it is the one
// parser of that syntax, used for flags, files, Kubernetes objects and
// DestinationRules alike. The empty string is the empty locality. Parts may
// not be empty, contain white space or control characters, or contain '*'
// (a wildcard belongs in a locality pattern, not in a locality). Errors wrap
// ErrInvalidLocality.
func ParseLocality(s string) (*Locality, error) {
	if s == "" {
		return &Locality{}, nil
	}
	parts, err := SplitLocality(s)
	if err != nil {
		return nil, err
	}
	if strings.Contains(s, "*") {
		return nil, fmt.Errorf("%w %q: '*' is a wildcard, allowed only in distribute patterns: %s", ErrInvalidLocality, s, localityForms)
	}
	l := &Locality{Region: parts[0]}
	if len(parts) > 1 {
		l.Zone = parts[1]
	}
	if len(parts) > 2 {
		l.Subzone = parts[2]
	}
	return l, nil
}

// SplitLocality checks the text form that localities and locality patterns
// share, one to three non-empty parts separated by '/' without white space
// or control characters, and returns the parts. It leaves '*' to the
// caller: ParseLocality refuses it, a pattern allows it as its last part.
// Errors wrap ErrInvalidLocality.
func SplitLocality(s string) ([]string, error) {
	if strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return nil, fmt.Errorf("%w %q: contains white space or control characters: %s", ErrInvalidLocality, s, localityForms)
	}
	parts := strings.Split(s, "/")
	if len(parts) > 3 {
		return nil, fmt.Errorf("%w %q: has %d parts: %s", ErrInvalidLocality, s, len(parts), localityForms)
	}
	for _, p := range parts {
		if p == "" {
			return nil, fmt.Errorf("%w %q: has an empty part: %s", ErrInvalidLocality, s, localityForms)
		}
	}
	return parts, nil
}

// FormatLocality renders a locality as "region/zone/subzone", dropping empty
// trailing parts; ParseLocality reads it back.
func FormatLocality(l *Locality) string {
	switch {
	case l.GetSubzone() != "":
		return l.GetRegion() + "/" + l.GetZone() + "/" + l.GetSubzone()
	case l.GetZone() != "":
		return l.GetRegion() + "/" + l.GetZone()
	}
	return l.GetRegion()
}
