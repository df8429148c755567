// Command pvesim runs the Proxmox API simulator on the plain-LXC backend,
// for trying vkimg against "a Proxmox node" by hand or from scripts:
//
//	pvesim -root /tmp/sim -token 'vkimg@pve!deploy=SECRET' -socket /run/pvesim.sock -ca /tmp/sim/ca.pem
//
// It prints the API URL and the certificate's fingerprint, then serves
// until SIGINT or SIGTERM. With -socket, the pvesh and pct commands from
// ../pvesh reach it as root@pam (PVESIM_SOCKET=<socket>).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vkimg/vkimg/internal/lxc"
	"github.com/vkimg/vkimg/internal/pvesim"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pvesim:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		root     = flag.String("root", "", "LXC backend root (lxc.lxcpath and storages); required")
		node     = flag.String("node", "pve", "node name")
		version  = flag.String("version", "8.2.4", "reported Proxmox VE version (9.1 or later has oci-registry-pull)")
		addr     = flag.String("addr", "127.0.0.1:8006", "HTTPS listen address")
		socket   = flag.String("socket", "", "Unix socket serving the API as root@pam (for pvesh and pct)")
		caOut    = flag.String("ca", "", "write the server's CA certificate (PEM) to this file")
		tokens   list
		storages list
		insecure list
	)
	flag.Var(&tokens, "token", "API token 'user@realm!name=secret' (repeatable)")
	flag.Var(&storages, "storage", "directory storage name (repeatable; default local)")
	flag.Var(&insecure, "insecure-registry", "registry host:port oci-registry-pull may reach over plain HTTP (repeatable)")
	flag.Parse()
	if *root == "" {
		return errors.New("-root is required")
	}
	toks := map[string]string{}
	for _, t := range tokens {
		id, secret, ok := strings.Cut(t, "=")
		if !ok || !strings.Contains(id, "!") {
			return fmt.Errorf("token %q is not user@realm!name=secret", t)
		}
		toks[id] = secret
	}
	b, err := lxc.New(lxc.Options{Root: *root, Node: *node, Storages: storages})
	if err != nil {
		return err
	}
	s, err := pvesim.Start(pvesim.Config{
		Backend: b, Node: *node, Version: *version, Tokens: toks, Addr: *addr, Socket: *socket, InsecureRegistries: insecure,
	})
	if err != nil {
		return err
	}
	if *caOut != "" {
		if err := os.WriteFile(*caOut, s.CACertPEM(), 0o644); err != nil {
			s.Close()
			return fmt.Errorf("write CA: %w", err)
		}
	}
	fmt.Printf("url=%s\nfingerprint=%s\n", s.URL(), s.Fingerprint())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return s.Close()
}
