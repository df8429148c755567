// Command sha256 compares crypto/sha256 with minio/sha256-simd on a 500 MB
// blob and prints MB/s of each, by wall clock and by the hashing thread's
// CPU time (the latter stays meaningful on a busy machine). The two are run
// alternately so that load changes hit both alike.
//
//	go run ./bench/sha256 [-rounds 5] [-mb 500]
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"hash"
	"runtime"
	"slices"
	"syscall"
	"time"

	simd "github.com/minio/sha256-simd"
)

func threadCPU() time.Duration {
	var ru syscall.Rusage
	const rusageThread = 1 // RUSAGE_THREAD
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	rounds := flag.Int("rounds", 5, "alternating rounds")
	mb := flag.Int("mb", 500, "blob size in MB")
	flag.Parse()
	runtime.LockOSThread()
	blob := make([]byte, *mb<<20)
	for i := range blob {
		blob[i] = byte(i*7 + i>>13)
	}
	impls := []struct {
		name string
		new  func() hash.Hash
	}{{"crypto/sha256", sha256.New}, {"minio/sha256-simd", simd.New}}
	wall := make([][]float64, len(impls))
	cpu := make([][]float64, len(impls))
	size := float64(len(blob)) / 1e6
	for range *rounds {
		for i, im := range impls {
			t0, c0 := time.Now(), threadCPU()
			h := im.new()
			h.Write(blob)
			h.Sum(nil)
			wall[i] = append(wall[i], size/time.Since(t0).Seconds())
			cpu[i] = append(cpu[i], size/(threadCPU()-c0).Seconds())
		}
	}
	median := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	fmt.Printf("%d MB blob, %d rounds, median MB/s\n", *mb, *rounds)
	for i, im := range impls {
		fmt.Printf("%-18s wall %7.0f   cpu %7.0f\n", im.name, median(wall[i]), median(cpu[i]))
	}
}
