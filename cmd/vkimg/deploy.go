package main

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/vkimg/vkimg/internal/deploy"
	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/edge"
	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/lxc"
	"github.com/vkimg/vkimg/internal/proxmox"
	"github.com/vkimg/vkimg/internal/signing"
	"github.com/vkimg/vkimg/internal/state"
	"github.com/vkimg/vkimg/internal/wizard"
)

// lxcStorage is the plain-LXC backend's one directory storage, used for
// both rootfs and templates unless the answers name others.
const lxcStorage = "local"

func deployCommand() *cli.Command {
	flags := append(deployconfig.Flags(), hypervisorFlags()...)
	flags = append(flags, edgeFlags()...)
	flags = append(flags, registryFlags()...)
	flags = append(flags, trustedKeyFlag,
		&cli.BoolFlag{Name: "insecure-local", Usage: "deploy an UNSIGNED local OCI layout when no trusted key is installed (no signature check!)"})
	return &cli.Command{
		Name:  "deploy",
		Usage: "deploy a new Vikunja instance behind TLS on this node",
		Description: `Asks the deploy questions on a terminal (or takes them from --config and
flags with --yes), validates every answer and the node before changing
anything, then creates the instance: its data volume, the slot-A container
from the verified template, and an nginx site with TLS. It succeeds only
once the backend, the rendered page and the MCP handshake answer through
nginx over HTTPS, and prints the URL and the admin login.

Ctrl+C or a failure removes what the run created; run the same command
again to retry. An existing instance of the same name is never touched.
Every step is logged to /var/log/vkimg/NAME.log with secrets redacted.`,
		Flags:  flags,
		Action: runDeploy,
	}
}

func runDeploy(c *cli.Context) error {
	a, err := deployconfig.FromContext(c, os.Getenv)
	if err != nil {
		return usageError{err}
	}
	hv, err := openHypervisor(c, a)
	if err != nil {
		return err
	}
	trusted, err := trustedKey(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if !c.Bool(deployconfig.FlagYes) {
		warnings, err := wizard.Run(ctx, a, wizard.Options{In: os.Stdin, Out: c.App.ErrWriter, Accessible: c.Bool(deployconfig.FlagAccessible)})
		if err != nil {
			return deployExit(err)
		}
		for _, w := range warnings {
			fmt.Fprintln(c.App.ErrWriter, "warning:", w)
		}
	}
	edgeAddr, err := edgeAddress(c)
	if err != nil {
		return err
	}
	res, err := deploy.Run(ctx, a, deploy.Options{
		Root: state.FromEnv(), Hypervisor: hv, Edge: nginxFromFlags(c), EdgeAddress: edgeAddr,
		Trusted: trusted, InsecureLocal: c.Bool("insecure-local"), Registry: registryOptions(c),
		Progress: c.App.ErrWriter, Terminal: isTerminal(c.App.ErrWriter),
	})
	if err != nil {
		return deployExit(err)
	}
	printDeployed(c.App.Writer, res)
	return nil
}

func printDeployed(w io.Writer, res *deploy.Result) {
	fmt.Fprintf(w, "\nVikunja %s is ready at %s\n", res.Version, res.URL)
	fmt.Fprintf(w, "  admin login: %s\n", res.AdminUser)
	if res.PasswordGenerated {
		fmt.Fprintf(w, "  password:    %s   (shown only this once: store it now)\n", res.AdminPassword)
	}
	fmt.Fprintf(w, "  container:   %d at %s\n", res.ContainerID, res.Address)
	fmt.Fprintf(w, "\nNext: point DNS for the domain at this node, log in and change the password;\n"+
		"`vkimg list` shows your instances.\n")
}

// deployExit gives refusals their exit status: bad answers and an existing
// instance are usage errors (nothing changed), a held lock has its own.
func deployExit(err error) error {
	var inv *deployconfig.InvalidError
	var missing *wizard.MissingError
	switch {
	case errors.As(err, &inv), errors.As(err, &missing), errors.Is(err, deploy.ErrExists):
		return usageError{err}
	case state.IsLocked(err):
		return cli.Exit(err.Error(), exitLocked)
	}
	return verifyExit(err)
}

// trustedKey loads the pinned key. A node without one (the default path
// missing) deploys only unsigned local layouts with --insecure-local.
func trustedKey(c *cli.Context) (*ecdsa.PublicKey, error) {
	path := c.String("trusted-key")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) && !c.IsSet("trusted-key") {
		return nil, nil
	}
	pub, err := signing.LoadPublicKey(path)
	if err != nil {
		return nil, usageError{err}
	}
	return pub, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func hypervisorFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "hypervisor", Usage: "lxc or proxmox (default: proxmox when pvesh or --proxmox-url is there, else lxc)"},
		&cli.StringFlag{Name: "proxmox-url", Usage: "Proxmox API `URL` (https://node:8006); default: the node's own pvesh"},
		&cli.PathFlag{Name: "proxmox-token-file", Usage: "`FILE` holding the API token as USER@REALM!ID=SECRET"},
		&cli.StringFlag{Name: "proxmox-fingerprint", Usage: "SHA-256 fingerprint of the node's certificate (as in its web UI)"},
	}
}

// openHypervisor picks the backend. a may be nil (list); for deploy on
// plain LXC, unset storages become the backend's one storage.
func openHypervisor(c *cli.Context, a *deployconfig.Answers) (hypervisor.Hypervisor, error) {
	kind := c.String("hypervisor")
	if kind == "" {
		kind = "lxc"
		if _, err := exec.LookPath("pvesh"); err == nil || c.String("proxmox-url") != "" {
			kind = "proxmox"
		}
	}
	node := ""
	if a != nil {
		node = a.Node
	}
	switch kind {
	case "lxc":
		storages := []string{lxcStorage}
		if a != nil {
			a.Storage.Rootfs = orDefault(a.Storage.Rootfs, lxcStorage)
			a.Storage.Template = orDefault(a.Storage.Template, lxcStorage)
			storages = []string{a.Storage.Rootfs}
			if a.Storage.Template != a.Storage.Rootfs {
				storages = append(storages, a.Storage.Template)
			}
		}
		return lxc.New(lxc.Options{Root: state.FromEnv().LXC(), Storages: storages})
	case "proxmox":
		if url := c.String("proxmox-url"); url != "" {
			id, secret, err := readToken(c.Path("proxmox-token-file"))
			if err != nil {
				return nil, usageError{err}
			}
			return proxmox.NewHTTPS(proxmox.HTTPSOptions{URL: url, TokenID: id, Secret: secret,
				Fingerprint: c.String("proxmox-fingerprint"), Node: node})
		}
		if node == "" {
			host, err := os.Hostname()
			if err != nil {
				return nil, err
			}
			node = host
		}
		return proxmox.NewNode(proxmox.NodeOptions{Node: node})
	}
	return nil, usagef("--hypervisor %q: want lxc or proxmox", kind)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// readToken reads "USER@REALM!ID=SECRET", optionally prefixed with
// "PVEAPIToken=" as Proxmox shows it.
func readToken(path string) (id, secret string, err error) {
	if path == "" {
		return "", "", errors.New("--proxmox-url needs --proxmox-token-file")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("proxmox token: %w", err)
	}
	s := strings.TrimPrefix(strings.TrimSpace(string(b)), "PVEAPIToken=")
	id, secret, ok := strings.Cut(s, "=")
	if !ok || !strings.Contains(id, "!") || secret == "" {
		return "", "", fmt.Errorf("proxmox token %s: want USER@REALM!ID=SECRET", path)
	}
	return id, secret, nil
}

func edgeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.PathFlag{Name: "nginx-config", Usage: "nginx's main config `FILE` (default /etc/nginx/nginx.conf)"},
		&cli.PathFlag{Name: "nginx-pid-file", Usage: "nginx master's pid `FILE` (default /run/nginx.pid)"},
		&cli.PathFlag{Name: "nginx-conf-dir", Usage: "`DIR` nginx includes sites from in the http context (default /etc/nginx/conf.d)"},
		&cli.PathFlag{Name: "nginx-upstream-dir", Usage: "`DIR` for vkimg's upstream files (default /etc/nginx/vkimg)"},
		&cli.PathFlag{Name: "nginx-main-dir", Usage: "`DIR` nginx includes in the main context (default /etc/nginx/modules-enabled)"},
		&cli.StringFlag{Name: "edge-address", Usage: "local `ADDRESS` nginx listens on for the site (default: all)"},
	}
}

func nginxFromFlags(c *cli.Context) *edge.Nginx {
	return &edge.Nginx{
		ConfigFile: c.Path("nginx-config"), PIDFile: c.Path("nginx-pid-file"),
		ConfDir: c.Path("nginx-conf-dir"), UpstreamDir: c.Path("nginx-upstream-dir"), MainDir: c.Path("nginx-main-dir"),
	}
}

func edgeAddress(c *cli.Context) (netip.Addr, error) {
	s := c.String("edge-address")
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, usagef("--edge-address %q: %v", s, err)
	}
	return a, nil
}
