package translog_test

import (
	"fmt"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/translog"
)

// A log entry is the canonical JSON of a link's key, seqno and ID; its
// leaf hash is RFC 6962's. ParseEntry accepts only that one form.
func ExampleEntry_Marshal() {
	key, _ := kez.ParsePublicKey("UDDLLEYYKK7MGLH34D7PYLBOVJSBZYEIKLLVRTPY54P3RWOM2J5JMLZF")
	e := translog.Entry{Key: key, Seqno: 1, ID: "bafkreidxzf5kn5thy5t76zfjguksmuhj7yumly42u7td7pwu3of65ptkrm"}
	fmt.Printf("%s\n%x\n", e.Marshal(), e.LeafHash())

	_, err := translog.ParseEntry([]byte(`{"id":"", "key":"` + key.String() + `","seqno":0}`))
	fmt.Println(err != nil)
	// Output:
	// {"id":"bafkreidxzf5kn5thy5t76zfjguksmuhj7yumly42u7td7pwu3of65ptkrm","key":"UDDLLEYYKK7MGLH34D7PYLBOVJSBZYEIKLLVRTPY54P3RWOM2J5JMLZF","seqno":1}
	// 92ee6ea59f3cf1ce495bfe6948df923722978e05fcf0d484e57a6228b4fbc17b
	// true
}

// A checkpoint verifies with the log's verifier key, and an inclusion
// proof shows an entry in the tree it commits to (the vectors of
// docs/spec/translog.md).
func ExampleVerifyInclusion() {
	const vkey = "example.com/sigchain-log+3cb8ee69+AQxpZH8QPYQjfxuv9vpTwL0tM68azEphjnPmKhrPIqs7"
	const signed = "example.com/sigchain-log\n7\nOgZo1DoD7BYWRkm9zGePlRfzdbvEUWLv0QqZpPAnKvM=\n\n" +
		"— example.com/sigchain-log PLjuadOi49X7i890yyTuylP2Qj3FuyPZupbCzVHblXHpENsl12S5bftH1lXhMzlWPr511Da0SVf4cSIkhMzCGZ72LgY=\n"
	cp, err := translog.ParseCheckpoint([]byte(signed), vkey)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cp.Origin, cp.Size)

	e, _ := translog.ParseEntry([]byte(`{"id":"bafkreihwofj5fcdkoclc3woltqopobgkktahmjkzncu6jl5vhcnyyyicn4","key":"UBHWPSQCCVOJ5KDQBBOGNZRHTZXMGBIDKMYOR36IE3TAN72YWFAJXCV4","seqno":1}`))
	proof, _ := translog.DecodeHashes([]string{
		"Vvg6IO3CCR06Gs6BlQ4pwXKRfLIBm19uq4+ZIUWSHAI=",
		"kXUknwn34cYc7ZHApdNqFeZoAmU6Ursawa4VJggTK4I=",
		"TcJ4WdcMyfWbhZodHG/jKEsRZvxpw6kThkR6jTqtVQw=",
	})
	fmt.Println(translog.VerifyInclusion(e, 2, proof, cp))
	fmt.Println(translog.VerifyInclusion(e, 3, proof, cp) != nil)
	// Output:
	// example.com/sigchain-log 7
	// <nil>
	// true
}
