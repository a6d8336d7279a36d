package handles

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

func newIdentity(t testing.TB) *kez.Identity {
	t.Helper()
	id, _, err := kez.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestClaimVerify(t *testing.T) {
	alice, mallory := newIdentity(t), newIdentity(t)
	h := Handle{Name: "alice", Domain: "kez.lat"}
	now := time.Unix(1_800_000_000, 0)
	good, err := NewClaim(alice, h, now)
	if err != nil {
		t.Fatal(err)
	}
	gh, gk, err := good.Verify(Rules{}, "kez.lat", now)
	if err != nil || gh != h || gk != alice.PublicKey() {
		t.Fatalf("good claim: %v %v %v", gh, gk, err)
	}

	mod := func(f func(c *Claim)) *Claim { c := *good; f(&c); return &c }
	forged, _ := NewClaim(mallory, h, now)
	for _, tc := range []struct {
		name string
		c    *Claim
		at   time.Time
		want error
	}{
		{"stale", good, now.Add(MaxClaimAge + time.Second), ErrClaimTime},
		{"future", good, now.Add(-MaxClaimSkew - time.Second), ErrClaimTime},
		{"signed by another key", mod(func(c *Claim) { c.Signature = forged.Signature }), now, ErrBadSignature},
		{"used for another name", mod(func(c *Claim) { c.Handle = "alicia@kez.lat" }), now, ErrBadSignature},
		{"used for another key", mod(func(c *Claim) { c.Key = mallory.PublicKey().String() }), now, ErrBadSignature},
		{"timestamp changed", mod(func(c *Claim) { c.Timestamp++ }), now, ErrBadSignature},
		{"other domain", mod(func(c *Claim) { c.Handle = "alice@evil.example" }), now, ErrBadClaim},
		{"not canonical", mod(func(c *Claim) { c.Handle = "@alice@kez.lat" }), now, ErrBadClaim},
		{"bad key", mod(func(c *Claim) { c.Key = "Uxyz" }), now, ErrBadClaim},
		{"bad base64", mod(func(c *Claim) { c.Signature = "***" }), now, ErrBadClaim},
		{"no timestamp", mod(func(c *Claim) { c.Timestamp = 0 }), now, ErrBadClaim},
		{"huge timestamp", mod(func(c *Claim) { c.Timestamp = 1 << 62 }), now, ErrClaimTime},
	} {
		if _, _, err := tc.c.Verify(Rules{}, "kez.lat", tc.at); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A claim for one server does not verify at another, even one that
	// would accept the handle's domain text.
	if _, _, err := good.Verify(Rules{}, "other.example", now); err == nil {
		t.Error("a claim verified at another server")
	}
	bad := mod(func(c *Claim) { c.Handle = "\u0430lice@kez.lat" })
	if _, _, err := bad.Verify(Rules{}, "kez.lat", now); ReasonOf(err) != ReasonHomoglyph {
		t.Errorf("homoglyph claim: %v", err)
	}
}

func BenchmarkClaimVerify(b *testing.B) {
	id := newIdentity(b)
	h := Handle{Name: "alice", Domain: "kez.lat"}
	now := time.Now()
	c, err := NewClaim(id, h, now)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Claim.Verify", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := c.Verify(Rules{}, "kez.lat", now); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Baseline: the bare signature check the claim check is built on.
	stmt := ClaimStatement(h, "kez.lat", id.PublicKey(), c.Timestamp)
	sig, _ := id.Sign(kez.ContextHandleClaim, stmt)
	b.Run("baseline/kez.Verify", func(b *testing.B) {
		for b.Loop() {
			if err := id.PublicKey().Verify(kez.ContextHandleClaim, stmt, sig); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkParse(b *testing.B) {
	b.Run("Parse", func(b *testing.B) {
		for b.Loop() {
			if _, err := Parse("@Alice.B@chat.example.org", ""); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline/strings.ToLower+Cut", func(b *testing.B) {
		for b.Loop() {
			name, dom, ok := strings.Cut(strings.ToLower("@Alice.B@chat.example.org")[1:], "@")
			if !ok || name == "" || dom == "" {
				b.Fatal("cut")
			}
		}
	})
}
