package kez

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

// loadVectorsForFuzz returns the vector file, to seed the fuzz corpora
// (and for tests that check values against it).
func loadVectorsForFuzz(f testing.TB) vectorFile {
	raw, err := os.ReadFile(vectorsPath)
	if err != nil {
		f.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(raw, &vf); err != nil {
		f.Fatal(err)
	}
	return vf
}

func FuzzParseMnemonic(f *testing.F) {
	vf := loadVectorsForFuzz(f)
	for _, v := range vf.Identities {
		f.Add(v.Words)
	}
	for _, v := range vf.Mnemonics {
		f.Add(v.Text)
	}
	f.Add("")
	f.Add("1. 2. 3)")
	f.Add("# only a comment")
	f.Add(strings.Repeat("zoo ", 24))
	f.Add(strings.Repeat("abandon ", 23) + strings.Repeat("qé", 30))
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMnemonic(s)
		// A reader taking the words piece by piece (SplitMnemonic) sees
		// what ParseMnemonic sees: the same count, the same first
		// unknown word.
		split := SplitMnemonic(s)
		var wc0 *WordCountError
		var we0 *WordError
		switch {
		case len(s) > maxMnemonicInput:
		case errors.As(err, &wc0) && wc0.Got != len(split):
			t.Fatalf("ParseMnemonic counts %d words, SplitMnemonic %d", wc0.Got, len(split))
		case errors.As(err, &we0) && (len(split) != MnemonicWords || IsWord(split[we0.Position-1])):
			t.Fatalf("ParseMnemonic refuses word %d, SplitMnemonic gives %q", we0.Position, split)
		case err == nil && strings.Join(split, " ") != m.Phrase():
			t.Fatalf("ParseMnemonic reads %q, SplitMnemonic %q", m.Phrase(), split)
		}
		if err != nil {
			var wc *WordCountError
			var we *WordError
			if !errors.As(err, &wc) && !errors.As(err, &we) && !errors.Is(err, ErrChecksum) && len(s) <= maxMnemonicInput {
				t.Fatalf("unexpected error kind: %v", err)
			}
			if errors.As(err, &we) && (we.Position < 1 || we.Position > MnemonicWords || len(we.Word) > maxWordEcho) {
				t.Fatalf("bad WordError %+v", we)
			}
			return
		}
		if len(m.Words()) != MnemonicWords {
			t.Fatalf("%d words accepted", len(m.Words()))
		}
		again, err := ParseMnemonic(m.Phrase())
		if err != nil || again.Phrase() != m.Phrase() {
			t.Fatalf("normal form does not re-parse: %v", err)
		}
		for _, w := range m.Words() {
			if !IsWord(w) {
				t.Fatalf("accepted %q", w)
			}
		}
	})
}

func FuzzParsePublicKey(f *testing.F) {
	vf := loadVectorsForFuzz(f)
	for _, v := range vf.Identities {
		f.Add(v.Key)
	}
	for _, v := range vf.PublicKeys {
		f.Add(v.Text)
	}
	f.Add("U")
	f.Add(strings.Repeat("U", 56))
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParsePublicKey(s)
		if err != nil {
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("error does not wrap ErrBadKey: %v", err)
			}
			return
		}
		if k.String() != s {
			t.Fatalf("non-canonical key accepted: %q re-encodes as %q", s, k.String())
		}
		if back, err := PublicKeyFromPeerID(k.PeerID()); err != nil || back != k {
			t.Fatalf("PeerID round trip: %v", err)
		}
	})
}

// FuzzDecodeIdentityFile feeds the identity file decoder. The passphrase is
// fixed ("pw") and scrypt is capped at 2^10 so that a fuzzed age header
// cannot make one run take seconds.
func FuzzDecodeIdentityFile(f *testing.F) {
	vf := loadVectorsForFuzz(f)
	for _, v := range vf.IdentityFiles {
		b, _ := base64.StdEncoding.DecodeString(v.FileBase64)
		f.Add(b)
	}
	id := mustIdentity(f, countingWords)
	enc, err := EncodeIdentityFile(id, []byte("pw"), 8)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(enc)
	f.Add(encodePlain(id))
	f.Add([]byte(plainHeader))
	f.Add([]byte(ageHeader))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeIdentityFile(data, []byte("pw"), 10)
		if err != nil {
			if !errors.Is(err, ErrBadIdentityFile) && !errors.Is(err, ErrWrongPassphrase) && !errors.Is(err, ErrPassphraseRequired) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		// Whatever opens must re-encode to a file that opens to the same key.
		plain := encodePlain(got)
		if bytes.HasPrefix(data, []byte(plainHeader)) && !bytes.Equal(plain, data) {
			t.Fatalf("non-canonical plain file accepted:\n%q\nre-encodes as\n%q", data, plain)
		}
		again, err := DecodeIdentityFile(plain, nil)
		if err != nil || again.PublicKey() != got.PublicKey() {
			t.Fatalf("re-encoded file does not open: %v", err)
		}
	})
}

// FuzzDecodeDeviceFile feeds the device file decoder, as
// FuzzDecodeIdentityFile feeds the identity file's.
func FuzzDecodeDeviceFile(f *testing.F) {
	dev := mustIdentity(f, countingWords)
	person := mustIdentity(f, zooWords).PublicKey()
	plain := encodeDevicePlain(dev, person)
	enc, err := EncodeDeviceFile(dev, person, []byte("pw"), 8)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(plain)
	f.Add(enc)
	f.Add(encodePlain(dev))
	f.Add([]byte(deviceHeader))
	f.Add(plain[:len(plain)-3])
	f.Fuzz(func(t *testing.T, data []byte) {
		got, p, err := decodeDeviceFile(data, []byte("pw"), 10)
		if err != nil {
			if !errors.Is(err, ErrBadIdentityFile) && !errors.Is(err, ErrWrongPassphrase) && !errors.Is(err, ErrPassphraseRequired) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if p == got.PublicKey() || p.IsZero() {
			t.Fatalf("accepted a device whose person is %s", p)
		}
		again := encodeDevicePlain(got, p)
		if bytes.HasPrefix(data, []byte(deviceHeader)) && !bytes.Equal(again, data) {
			t.Fatalf("non-canonical plain file accepted:\n%q\nre-encodes as\n%q", data, again)
		}
		d2, p2, err := DecodeDeviceFile(again, nil)
		if err != nil || d2.PublicKey() != got.PublicKey() || p2 != p {
			t.Fatalf("re-encoded file does not open: %v", err)
		}
	})
}
