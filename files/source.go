package files

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/kez"
)

// BlobSource finds the blobs a [Node] serves. It is the seam where a share
// index plugs in; [FileSource] is a simple in-memory one. Implementations
// must be safe for concurrent use.
type BlobSource interface {
	// OpenBlob opens blob c for reading. It returns an error wrapping
	// [ErrNotFound] if the source does not have it. The caller closes the
	// blob.
	OpenBlob(ctx context.Context, c cid.Cid) (Blob, error)
}

// Blob is an open blob: its bytes and its hash tree. ReadAt must be safe
// for concurrent use, as for *os.File.
type Blob interface {
	io.ReaderAt
	io.Closer
	// Tree returns the blob's hash tree; Tree().CID() is the blob's CID and
	// Tree().Size() its size.
	Tree() *format.Tree
}

// Policy decides which peer may fetch which blob. A Sharing's node allows
// a public blob to everyone and a private one only to its recipients (their
// person keys and their chains' current devices).
// Implementations must be safe for concurrent use.
type Policy interface {
	// Allow reports whether the peer with the given key may fetch blob c.
	Allow(peer kez.PublicKey, c cid.Cid) bool
}

// PolicyFunc adapts a function to a [Policy].
type PolicyFunc func(peer kez.PublicKey, c cid.Cid) bool

// Allow calls f.
func (f PolicyFunc) Allow(peer kez.PublicKey, c cid.Cid) bool { return f(peer, c) }

// allowAll is the policy that lets every peer fetch every blob of the source.
var allowAll Policy = PolicyFunc(func(kez.PublicKey, cid.Cid) bool { return true })

// FileSource serves files on disk, remembered in memory by CID. It is safe
// for concurrent use. A file that changes after it was added is served as
// it is and fails the fetcher's verification, so add it again after a change.
type FileSource struct {
	mu    sync.RWMutex
	files map[cid.Cid]fileBlobInfo
}

type fileBlobInfo struct {
	path string
	tree *format.Tree
}

// NewFileSource returns an empty FileSource.
func NewFileSource() *FileSource { return &FileSource{files: map[cid.Cid]fileBlobInfo{}} }

// AddFile hashes the file at path and serves it under its CID, which it
// returns with the tree.
func (s *FileSource) AddFile(path string) (*format.Tree, error) {
	t, err := format.HashFile(path)
	if err != nil {
		return nil, err
	}
	s.Add(path, t)
	return t, nil
}

// Add serves the file at path under t's CID, trusting that t is its tree
// (for a share index that stored the tree when the file was shared).
func (s *FileSource) Add(path string, t *format.Tree) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[t.CID()] = fileBlobInfo{path: path, tree: t}
}

// Remove stops serving blob c.
func (s *FileSource) Remove(c cid.Cid) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.files, c)
}

// OpenBlob implements [BlobSource].
func (s *FileSource) OpenBlob(_ context.Context, c cid.Cid) (Blob, error) {
	s.mu.RLock()
	info, ok := s.files[c]
	s.mu.RUnlock()
	if !ok {
		return nil, ErrNotFound
	}
	f, err := os.Open(info.path)
	if err != nil {
		return nil, fmt.Errorf("files: opening the shared file: %w", err)
	}
	st, err := f.Stat()
	if err != nil || st.Size() != info.tree.Size() {
		f.Close()
		return nil, fmt.Errorf("files: the shared file %s changed size since it was shared", info.path)
	}
	return &fileBlob{File: f, tree: info.tree}, nil
}

type fileBlob struct {
	*os.File
	tree *format.Tree
}

func (b *fileBlob) Tree() *format.Tree { return b.tree }
