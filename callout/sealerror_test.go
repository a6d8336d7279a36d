package callout

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// SealError is set by a sealed request the xkey does not open (a zero key,
// as nats-server before v2.10.4 seals to, or another key), counts such
// requests in a row, and is cleared by the next request that opens or
// comes unsealed; other unreadable requests neither set nor clear it.
func TestSealError(t *testing.T) {
	rig := newLaneRig(t, LoginLimits{})
	svc := rig.svc
	serverX := fixedPair(t, nkeys.PrefixByteCurve, 6)
	serverXPub, _ := serverX.PublicKey()
	zero, err := nkeys.Encode(nkeys.PrefixByteCurve, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	otherPub, _ := fixedPair(t, nkeys.PrefixByteCurve, 8).PublicKey()
	request := rig.msg(t, rig.alice.PublicKey().String(), "192.0.2.1", rig.alice.SignNATSNonce, time.Now().Add(time.Minute))
	sealedTo := func(to string) *nats.Msg {
		data, err := serverX.Seal(request.Data, to)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(AuthSubject)
		m.Header.Set(ServerXKeyHeader, serverXPub)
		m.Data = data
		return m
	}

	if err := svc.SealError(); err != nil {
		t.Fatalf("a fresh service: %v", err)
	}
	svc.triage(sealedTo(string(zero)))
	svc.triage(sealedTo(otherPub))
	err = svc.SealError()
	if !errors.Is(err, ErrCannotOpen) || err.Error() != "callout: the sealed authorization request does not open with this xkey: the last 2 sealed requests did not open" {
		t.Fatalf("after two unopenable requests: %v", err)
	}
	if r := svc.triage(sealedTo(string(zero))); !errors.Is(r.err, ErrCannotOpen) || !errors.Is(r.err, ErrMalformedRequest) {
		t.Fatalf("the request's error: %v", r.err)
	}

	if r := svc.triage(sealedTo(rig.keys.XKeyPublicKey())); r.err != nil {
		t.Fatalf("a request sealed to the xkey: %v", r.err)
	}
	if err := svc.SealError(); err != nil {
		t.Fatalf("after a request that opens: %v", err)
	}
	svc.triage(sealedTo(otherPub))
	svc.triage(request) // unsealed: nats.conf without an xkey
	if err := svc.SealError(); err != nil {
		t.Fatalf("after an unsealed request: %v", err)
	}

	// Unreadable for other reasons: not the xkey's doing; they neither set
	// nor clear it.
	svc.triage(sealedTo(otherPub))
	bad := sealedTo(rig.keys.XKeyPublicKey())
	bad.Header.Set(ServerXKeyHeader, "not a curve key")
	big := sealedTo(rig.keys.XKeyPublicKey())
	big.Data = make([]byte, MaxRequestSize+1)
	for _, m := range []*nats.Msg{bad, big} {
		if r := svc.triage(m); r.err == nil || errors.Is(r.err, ErrCannotOpen) {
			t.Errorf("%v", r.err)
		}
	}
	if err := svc.SealError(); err == nil || err.Error() != "callout: the sealed authorization request does not open with this xkey: the last 1 sealed requests did not open" {
		t.Fatalf("after unreadable requests that are not about the xkey: %v", err)
	}
}
