package edge

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// PortUse says who listens on a TCP port of the node.
type PortUse struct {
	Port    int
	Program string // process name (comm); empty when the port is free
	PID     int
}

// Free reports whether nothing listens on the port.
func (u PortUse) Free() bool { return u.Program == "" }

// CheckPorts is deploy's pre-flight for the edge: each port must be free or
// held by nginx (which vkimg then uses); anything else is refused, naming
// the program in the way.
func CheckPorts(ports ...int) error {
	uses, err := PortUsers(ports...)
	if err != nil {
		return err
	}
	for _, u := range uses {
		if !u.Free() && u.Program != "nginx" {
			return fmt.Errorf("port %d is held by %s (pid %d): the edge (nginx) needs it", u.Port, u.Program, u.PID)
		}
	}
	return nil
}

// PortUsers finds who listens on each TCP port (IPv4 or IPv6, any address)
// in this network namespace, from /proc.
func PortUsers(ports ...int) ([]PortUse, error) {
	want := map[int]bool{}
	for _, p := range ports {
		want[p] = true
	}
	inodes := map[string]int{} // socket inode → port
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if err := listeningInodes(table, want, inodes); err != nil {
			return nil, err
		}
	}
	holders := map[int]PortUse{}
	if len(inodes) > 0 {
		fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
		for _, fd := range fds {
			link, err := os.Readlink(fd)
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			port, ok := inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")]
			if !ok {
				continue
			}
			if _, done := holders[port]; done {
				continue
			}
			pidDir := filepath.Dir(filepath.Dir(fd))
			pid, _ := strconv.Atoi(filepath.Base(pidDir))
			comm, _ := os.ReadFile(filepath.Join(pidDir, "comm"))
			holders[port] = PortUse{Port: port, Program: strings.TrimSpace(string(comm)), PID: pid}
		}
		for inode, port := range inodes {
			if _, ok := holders[port]; !ok {
				// Listening, but the owner is out of sight (another user's
				// process when not root): still not free.
				holders[port] = PortUse{Port: port, Program: "unknown (socket inode " + inode + ")"}
			}
		}
	}
	out := make([]PortUse, 0, len(ports))
	for _, p := range ports {
		u, ok := holders[p]
		if !ok {
			u = PortUse{Port: p}
		}
		out = append(out, u)
	}
	return out, nil
}

// listeningInodes adds to inodes the sockets of table in state LISTEN on a
// wanted port.
func listeningInodes(table string, want map[int]bool, inodes map[string]int) error {
	f, err := os.Open(table)
	if os.IsNotExist(err) {
		return nil // no IPv6 in this kernel
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "0A" { // 0A = TCP_LISTEN
			continue
		}
		_, hexPort, ok := strings.Cut(fields[1], ":")
		if !ok {
			continue
		}
		port, err := strconv.ParseInt(hexPort, 16, 32)
		if err != nil || !want[int(port)] {
			continue
		}
		inodes[fields[9]] = int(port)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", table, err)
	}
	return nil
}
