// Command verify checks Hotline's checkpoints and Merkle proofs with Go's
// golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog: an implementation nobody
// here wrote. It reads one JSON case on stdin and exits 0 only if everything verifies.
//
// Build (GOPATH mode, no module download; Debian's golang-golang-x-mod-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o verify verify.go
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type inclusion struct {
	Index    int64    `json:"index"`
	LeafHash string   `json:"leaf_hash"`
	Entry    string   `json:"entry"`
	Proof    []string `json:"proof"`
}

type consistency struct {
	OldSize int64    `json:"old_size"`
	OldRoot string   `json:"old_root"`
	Proof   []string `json:"proof"`
}

// tile is a hash tile as a live relay served it (C2SP tlog-tiles: height 8).
type tile struct {
	Level int64  `json:"level"`
	Index int64  `json:"index"`
	Width int    `json:"width"`
	Data  string `json:"data"`
}

type testCase struct {
	VKey        string        `json:"vkey"`
	Checkpoint  string        `json:"checkpoint"`
	Inclusion   []inclusion   `json:"inclusion"`
	Consistency []consistency `json:"consistency"`
	// With tiles: Go computes the proofs itself from them (tlog.TileHashReader checks
	// every tile it reads against the checkpoint's root), then checks them.
	Tiles       []tile        `json:"tiles"`
	ProveRecord []inclusion   `json:"prove_record"`
	ProveTree   []consistency `json:"prove_tree"`
}

// tiles serves the relay's tiles to tlog.TileHashReader.
type tiles map[tlog.Tile][]byte

func (t tiles) Height() int { return 8 }

func (t tiles) ReadTiles(want []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(want))
	for i, w := range want {
		data, ok := t[w]
		if !ok {
			return nil, fmt.Errorf("tile %v was not served", w)
		}
		out[i] = data
	}
	return out, nil
}

func (t tiles) SaveTiles([]tlog.Tile, [][]byte) {}

func hash(s string) tlog.Hash {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != tlog.HashSize {
		fail("bad hash %q", s)
	}
	var h tlog.Hash
	copy(h[:], b)
	return h
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "verify: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	var c testCase
	if err := json.NewDecoder(os.Stdin).Decode(&c); err != nil {
		fail("reading the case: %v", err)
	}
	v, err := note.NewVerifier(c.VKey)
	if err != nil {
		fail("verifier key: %v", err)
	}
	n, err := note.Open([]byte(c.Checkpoint), note.VerifierList(v))
	if err != nil {
		fail("note.Open: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] != v.Name() {
		fail("checkpoint text %q: origin is not the key name", n.Text)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || strconv.FormatInt(size, 10) != lines[1] {
		fail("checkpoint size %q", lines[1])
	}
	root := hash(lines[2])
	for _, inc := range c.Inclusion {
		leaf := hash(inc.LeafHash)
		if inc.Entry != "" {
			entry, err := base64.StdEncoding.DecodeString(inc.Entry)
			if err != nil || tlog.RecordHash(entry) != leaf {
				fail("leaf %d: RecordHash(entry) differs from the leaf hash", inc.Index)
			}
		}
		var p tlog.RecordProof
		for _, h := range inc.Proof {
			p = append(p, hash(h))
		}
		if err := tlog.CheckRecord(p, size, root, inc.Index, leaf); err != nil {
			fail("CheckRecord(leaf %d, size %d): %v", inc.Index, size, err)
		}
	}
	for _, con := range c.Consistency {
		var p tlog.TreeProof
		for _, h := range con.Proof {
			p = append(p, hash(h))
		}
		if err := tlog.CheckTree(p, size, root, con.OldSize, hash(con.OldRoot)); err != nil {
			fail("CheckTree(%d -> %d): %v", con.OldSize, size, err)
		}
	}
	served := tiles{}
	for _, t := range c.Tiles {
		data, err := base64.StdEncoding.DecodeString(t.Data)
		if err != nil {
			fail("tile %d/%d: %v", t.Level, t.Index, err)
		}
		served[tlog.Tile{H: 8, L: int(t.Level), N: t.Index, W: t.Width}] = data
	}
	reader := tlog.TileHashReader(tlog.Tree{N: size, Hash: root}, served)
	for _, inc := range c.ProveRecord {
		p, err := tlog.ProveRecord(size, inc.Index, reader)
		if err != nil {
			fail("ProveRecord(leaf %d, size %d) from the tiles: %v", inc.Index, size, err)
		}
		if err := tlog.CheckRecord(p, size, root, inc.Index, hash(inc.LeafHash)); err != nil {
			fail("CheckRecord(leaf %d, size %d) from the tiles: %v", inc.Index, size, err)
		}
	}
	for _, con := range c.ProveTree {
		p, err := tlog.ProveTree(size, con.OldSize, reader)
		if err != nil {
			fail("ProveTree(%d -> %d) from the tiles: %v", con.OldSize, size, err)
		}
		if err := tlog.CheckTree(p, size, root, con.OldSize, hash(con.OldRoot)); err != nil {
			fail("CheckTree(%d -> %d) from the tiles: %v", con.OldSize, size, err)
		}
	}
	fmt.Printf("ok: %s size %d, %d inclusion and %d consistency proofs, %d and %d from tiles\n",
		v.Name(), size, len(c.Inclusion), len(c.Consistency), len(c.ProveRecord),
		len(c.ProveTree))
}
