package registry

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/vkimg/vkimg/internal/registry/registrytest"
	"github.com/vkimg/vkimg/internal/testenv"
)

// BenchmarkPublishPull times publishing a template to a loopback registry
// and pulling it uncached and cached. The template is the layout in
// $VKIMG_BENCH_LAYOUT (e.g. the output of `vkimg build recipes/standin.yaml`)
// or, without it, two random 32 MiB layers:
//
//	VKIMG_BENCH_LAYOUT=/tmp/out go test -run - -bench PublishPull -benchtime 3x ./internal/registry/
func BenchmarkPublishPull(b *testing.B) {
	ctx := context.Background()
	reg := testenv.RegistryPlain(b)
	dir := os.Getenv("VKIMG_BENCH_LAYOUT")
	if dir == "" {
		dir, _ = registrytest.TemplateLayout(b, "1.0.0", 32<<20)
	}
	src := LayoutRef(dir, "")
	img, _, err := sourceImage(ctx, src, Options{})
	if err != nil {
		b.Fatal(err)
	}
	size := int64(0)
	layers, _ := img.Layers()
	for _, l := range layers {
		n, _ := l.Size()
		size += n
	}
	key := testKey(b)
	repo := mustRef(b, reg.Host+"/bench")
	if _, err := Publish(ctx, src, repo, PublishOptions{Key: key}); err != nil {
		b.Fatal(err)
	}
	version := ""
	if cf, err := img.ConfigFile(); err == nil {
		version = cf.Config.Labels["org.opencontainers.image.version"]
	}
	pullRef := mustRef(b, reg.Host+"/bench:"+version)
	b.Run("publish", func(b *testing.B) {
		b.SetBytes(size)
		i := 0
		for b.Loop() {
			i++
			dst := mustRef(b, fmt.Sprintf("%s/bench-publish-%d", reg.Host, i))
			if _, err := Publish(ctx, src, dst, PublishOptions{Key: key}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pull-uncached", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if _, err := Pull(ctx, pullRef, PullOptions{Cache: b.TempDir(), Trusted: &key.PublicKey}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pull-cached", func(b *testing.B) {
		cache := b.TempDir()
		if _, err := Pull(ctx, pullRef, PullOptions{Cache: cache, Trusted: &key.PublicKey}); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(size)
		for b.Loop() {
			res, err := Pull(ctx, pullRef, PullOptions{Cache: cache, Trusted: &key.PublicKey})
			if err != nil {
				b.Fatal(err)
			}
			if res.BlobsFetched != 0 {
				b.Fatalf("cached pull fetched %d blobs", res.BlobsFetched)
			}
		}
	})
}
