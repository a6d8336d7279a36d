package format_test

import (
	"fmt"
	"testing"

	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/internal/testenv/redacttest"
)

// A private entry's file key never prints, alone, in an Entry or in a list
// of entries (as Browse returns them).
func TestFileKeyDoesNotPrint(t *testing.T) {
	k, err := format.NewFileKey()
	if err != nil {
		t.Fatal(err)
	}
	secrets := redacttest.Bytes(k[:])
	e := format.Entry{Name: "salary.xlsx", Size: 1000, Private: true, Key: k, BlobSize: format.EncryptedSize(1000)}
	redacttest.Check(t, k, secrets...)
	redacttest.Check(t, e, secrets...)
	redacttest.Check(t, &e, secrets...)
	redacttest.Check(t, []format.Entry{e, e}, secrets...)
	if s := k.String(); s != "format.FileKey(redacted)" {
		t.Errorf("String() = %q", s)
	}
	if s := (format.FileKey{}).String(); s != "format.FileKey(none)" {
		t.Errorf("the zero key's String() = %q", s)
	}
}

// An Entry prints as fmt prints its fields, the key aside.
func ExampleEntry_Format() {
	e := format.Entry{Name: "salary.xlsx", Size: 1000, Private: true, Key: format.FileKey{1, 2, 3}, BlobSize: 1016}
	fmt.Printf("%+v\n", e)
	fmt.Printf("%#v\n", e.Key)
	// Output:
	// {Name:salary.xlsx Size:1000 CID:b MediaType: ModTime:0001-01-01 00:00:00 +0000 UTC Private:true Key:format.FileKey(redacted) BlobSize:1016 Device:UAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABET7}
	// format.FileKey(redacted)
}
