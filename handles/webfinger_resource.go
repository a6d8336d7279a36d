package handles

import (
	"fmt"
	"strings"
)

// ParseWebFingerResource parses the resource parameter of a WebFinger
// query: "acct:" (any case) and a canonical-shaped handle "NAME@DOMAIN"
// (docs/spec/handles.md §4). allowLocal accepts development domains. The
// error is a *[HandleError]; its Reason is [ReasonBadForm] when the text is
// not an acct: URI of the expected shape.
func ParseWebFingerResource(resource string, allowLocal bool) (Handle, error) {
	if len(resource) > MaxInputLen {
		return Handle{}, &HandleError{Input: resource, Reason: ReasonTooLong, Detail: fmt.Sprintf("the resource is %d bytes long; at most %d are read", len(resource), MaxInputLen)}
	}
	if resource == "" {
		return Handle{}, herr(resource, ReasonEmpty, "the resource is empty; want acct:name@domain")
	}
	const scheme = "acct:"
	if len(resource) < len(scheme) || !strings.EqualFold(resource[:len(scheme)], scheme) {
		return Handle{}, herr(resource, ReasonBadForm, "the resource is not an acct: URI; want acct:name@domain")
	}
	rest := resource[len(scheme):]
	switch {
	case strings.HasPrefix(rest, "@"):
		return Handle{}, herr(resource, ReasonBadForm, "the resource has an @ before the name; want acct:name@domain")
	case strings.ContainsAny(rest, "% \t\r\n"):
		if err := checkText(resource, resource); err != nil {
			return Handle{}, err // a look-alike gets its precise reason first
		}
		return Handle{}, herr(resource, ReasonBadCharacter, "the resource has a space or percent-encoding; a handle needs neither")
	case !strings.Contains(rest, "@"):
		return Handle{}, herr(resource, ReasonNoDomain, "the resource has no domain; want acct:name@domain")
	}
	h, err := Rules{AllowLocal: allowLocal}.Parse(rest)
	if err != nil {
		if he, ok := err.(*HandleError); ok {
			he.Input = resource
		}
		return Handle{}, err
	}
	return h, nil
}
