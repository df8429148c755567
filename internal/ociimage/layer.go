package ociimage

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// zstdLevel is fixed: a different level (or encoder concurrency) gives
// different bytes and so a different image digest.
const zstdLevel = zstd.SpeedBetterCompression

func newZstdWriter(w io.Writer) (*zstd.Encoder, error) {
	return zstd.NewWriter(w, zstd.WithEncoderLevel(zstdLevel), zstd.WithEncoderConcurrency(1))
}

// WriteTar writes normalised entries as one tar stream.
func WriteTar(w io.Writer, entries []Entry) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := e.Header
		if err := tw.WriteHeader(&h); err != nil {
			return fmt.Errorf("write tar entry %s: %w", h.Name, err)
		}
		if h.Typeflag != tar.TypeReg || h.Size == 0 {
			continue
		}
		if err := copyEntry(tw, e); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write tar: %w", err)
	}
	return nil
}

func copyEntry(w io.Writer, e Entry) error {
	if e.Open == nil {
		return fmt.Errorf("write tar entry %s: no content", e.Header.Name)
	}
	r, err := e.Open()
	if err != nil {
		return fmt.Errorf("write tar entry %s: %w", e.Header.Name, err)
	}
	defer r.Close()
	n, err := io.Copy(w, io.LimitReader(r, e.Header.Size))
	if err != nil {
		return fmt.Errorf("write tar entry %s: %w", e.Header.Name, err)
	}
	if n != e.Header.Size {
		return fmt.Errorf("write tar entry %s: file changed while reading (%d of %d bytes)", e.Header.Name, n, e.Header.Size)
	}
	return nil
}

// WriteTarZst writes entries as a tar+zstd stream and returns the sha256
// of the uncompressed tar (the OCI diff ID).
func WriteTarZst(w io.Writer, entries []Entry) (v1.Hash, error) {
	zw, err := newZstdWriter(w)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("zstd: %w", err)
	}
	diff := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(zw, diff), 1<<20)
	if err := WriteTar(bw, entries); err != nil {
		zw.Close()
		return v1.Hash{}, err
	}
	if err := bw.Flush(); err != nil {
		zw.Close()
		return v1.Hash{}, fmt.Errorf("zstd: %w", err)
	}
	if err := zw.Close(); err != nil {
		return v1.Hash{}, fmt.Errorf("zstd: %w", err)
	}
	return hashOf(diff), nil
}

func hashOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

// FileLayer is a tar+zstd layer stored in a file, with its digests known.
type FileLayer struct {
	Path   string
	digest v1.Hash
	diffID v1.Hash
	size   int64
}

// WriteLayerFile writes entries as a tar+zstd layer to file.
func WriteLayerFile(file string, entries []Entry) (*FileLayer, error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("write layer: %w", err)
	}
	defer f.Close()
	dig := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, dig)}
	diffID, err := WriteTarZst(cw, entries)
	if err != nil {
		return nil, fmt.Errorf("write layer %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write layer %s: %w", file, err)
	}
	return &FileLayer{Path: file, digest: hashOf(dig), diffID: diffID, size: cw.n}, nil
}

// OpenLayerFile rebuilds a FileLayer from a layer file and its known diff
// ID (both cached by the builder), checking the file's digest.
func OpenLayerFile(file string, diffID v1.Hash) (*FileLayer, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("open layer: %w", err)
	}
	defer f.Close()
	dig := sha256.New()
	n, err := io.Copy(dig, f)
	if err != nil {
		return nil, fmt.Errorf("open layer %s: %w", file, err)
	}
	return &FileLayer{Path: file, digest: hashOf(dig), diffID: diffID, size: n}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// Digest implements v1.Layer.
func (l *FileLayer) Digest() (v1.Hash, error) { return l.digest, nil }

// DiffID implements v1.Layer.
func (l *FileLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }

// Size implements v1.Layer.
func (l *FileLayer) Size() (int64, error) { return l.size, nil }

// MediaType implements v1.Layer.
func (l *FileLayer) MediaType() (types.MediaType, error) { return types.OCILayerZStd, nil }

// Compressed implements v1.Layer.
func (l *FileLayer) Compressed() (io.ReadCloser, error) { return os.Open(l.Path) }

// Uncompressed implements v1.Layer.
func (l *FileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.Path)
	if err != nil {
		return nil, err
	}
	zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
	if err != nil {
		f.Close()
		return nil, err
	}
	return &zstdReadCloser{zr: zr, f: f}, nil
}

type zstdReadCloser struct {
	zr *zstd.Decoder
	f  *os.File
}

func (z *zstdReadCloser) Read(b []byte) (int, error) { return z.zr.Read(b) }
func (z *zstdReadCloser) Close() error {
	z.zr.Close()
	return z.f.Close()
}
