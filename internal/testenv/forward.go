package testenv

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// Forward accepts TCP connections on listen (host:port, port 0 for any)
// and relays each to target. Tests use it to expose a loopback-only server
// on the address of their own bridge, so a container on that bridge can
// reach it while the server still sees a loopback client. It returns the
// address it listens on and stops when the test ends.
func Forward(t testing.TB, listen, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("forward %s to %s: %v", listen, target, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			open[c] = true
		} else {
			delete(open, c)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Logf("forward %s: %v", listen, err)
				}
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				t.Logf("forward to %s: %v", target, err)
				in.Close()
				continue
			}
			track(in, true)
			track(out, true)
			wg.Add(2)
			relay := func(dst, src net.Conn) {
				defer wg.Done()
				io.Copy(dst, src)
				// Closing both ends ends the relay in the other direction too.
				dst.Close()
				src.Close()
				track(dst, false)
				track(src, false)
			}
			go relay(out, in)
			go relay(in, out)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}
