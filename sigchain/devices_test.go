package sigchain

import (
	"testing"
)

// FuzzNamedDevice: whatever a link's body, NamedDevice does not panic,
// and on every link VerifyDeviceLink accepts it names the same device.
func FuzzNamedDevice(f *testing.F) {
	for _, links := range vectorSeeds(f) {
		for _, l := range links {
			f.Add(l)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLink(b)
		if err != nil {
			return
		}
		d, revoke, ok := l.NamedDevice()
		if !ok && (l.Type() == TypeAddDevice || l.Type() == TypeRevokeDevice) && !d.IsZero() {
			t.Fatal("a device named without ok")
		}
		c, err := VerifyDeviceLink(b)
		if err != nil {
			return
		}
		if !ok || d != c.Device || revoke != c.Revoke {
			t.Fatalf("NamedDevice = %s, %v, %v; VerifyDeviceLink says %s, revoke %v", d, revoke, ok, c.Device, c.Revoke)
		}
	})
}
