package session

import "testing"

func TestSmoke(t *testing.T) {
	p := newPair(t)
	p.establish()
	for i := 0; i < 3; i++ {
		p.open(p.b, p.seal(p.a, "x"), "x")
		p.open(p.a, p.seal(p.b, "y"), "y")
	}
}
