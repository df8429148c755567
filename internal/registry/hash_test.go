package registry

import (
	"crypto/sha256"
	"hash"
	"testing"

	simd "github.com/minio/sha256-simd"
)

// BenchmarkSHA256 compares the standard library with minio/sha256-simd on a
// 500 MB blob, the size class of a template's base layer. Run with
// `go test -run - -bench SHA256 -benchtime 3x ./internal/registry/`; MB/s is
// the figure that decided newHasher.
func BenchmarkSHA256(b *testing.B) {
	blob := make([]byte, 500<<20)
	for i := range blob {
		blob[i] = byte(i*7 + i>>13)
	}
	for _, c := range []struct {
		name string
		new  func() hash.Hash
	}{
		{"crypto-sha256", sha256.New},
		{"sha256-simd", simd.New},
		{"newHasher", newHasher},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(blob)))
			for b.Loop() {
				h := c.new()
				h.Write(blob)
				h.Sum(nil)
			}
		})
	}
}
