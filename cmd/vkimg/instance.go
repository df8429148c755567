package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/vkimg/vkimg/internal/backup"
	"github.com/vkimg/vkimg/internal/deploy"
	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/state"
)

// instanceFlags are shared by every command that works on a deployed
// instance: how to reach its hypervisor, nginx and templates.
func instanceFlags() []cli.Flag {
	flags := append(hypervisorFlags(), edgeFlags()...)
	flags = append(flags, registryFlags()...)
	return append(flags, trustedKeyFlag,
		&cli.BoolFlag{Name: "insecure-local", Usage: "use an UNSIGNED local OCI layout when no trusted key is installed (no signature check!)"},
		&cli.DurationFlag{Name: "health-timeout", Value: 3 * time.Minute, Usage: "how long a container may take to become healthy"},
		&cli.DurationFlag{Name: "drain-timeout", Value: 5 * time.Minute, Usage: "how long requests in flight on the old version (a large upload) may take after a switch"},
	)
}

var yesFlag = &cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "confirm without asking (for scripts)"}

// instanceName is the command's INSTANCE argument; with none, the node's
// only instance.
func instanceName(c *cli.Context) (string, error) {
	switch c.NArg() {
	case 1:
		return c.Args().First(), nil
	case 0:
	default:
		return "", tooManyArgs(c, "one INSTANCE")
	}
	root := state.FromEnv()
	entries, _ := os.ReadDir(root.Instances())
	var names []string
	for _, e := range entries {
		if _, err := os.Stat(deploy.InstancePath(root, e.Name())); err == nil {
			names = append(names, e.Name())
		}
	}
	switch len(names) {
	case 1:
		return names[0], nil
	case 0:
		return "", usagef("%s: no instance on this node (`vkimg deploy` makes one)", c.Command.Name)
	}
	return "", usagef("%s: name the INSTANCE: %s", c.Command.Name, strings.Join(names, ", "))
}

// tooManyArgs refuses extra arguments. The flag parser stops at the first
// argument, so options typed after INSTANCE or ARCHIVE arrive here too.
func tooManyArgs(c *cli.Context, want string) error {
	return usagef("%s: takes %s, after the options (got %s)", c.Command.Name, want, strings.Join(c.Args().Slice(), " "))
}

// onInstance is a command's action on one instance: INSTANCE (or the
// node's only one) with its packages wired and Ctrl+C ending ctx. A
// result, if not nil, is printed as JSON with --json, or by text.
func onInstance[R any](run func(ctx context.Context, c *cli.Context, name string, o deploy.Options) (R, error), text func(w io.Writer, res R)) cli.ActionFunc {
	return func(c *cli.Context) error {
		name, err := instanceName(c)
		if err != nil {
			return err
		}
		o, err := instanceOptions(c, name)
		if err != nil {
			return err
		}
		ctx, stop := interruptible(c)
		defer stop()
		res, err := run(ctx, c, name, o)
		if err != nil {
			return operationExit(err)
		}
		if c.Bool("json") {
			return printJSON(c.App.Writer, res)
		}
		text(c.App.Writer, res)
		return nil
	}
}

// instanceOptions wires the packages an operation on instance name needs.
func instanceOptions(c *cli.Context, name string) (deploy.Options, error) {
	return operationOptions(c, placement(name))
}

// placement is where an instance lives (node, storages) as answers for
// openHypervisor; empty when this node does not have it.
func placement(name string) *deployconfig.Answers {
	a := &deployconfig.Answers{}
	path := deploy.InstancePath(state.FromEnv(), name)
	if cfg, err := deployconfig.ReadInstance(path); err == nil {
		a.Node, a.Storage = cfg.Node, cfg.Storage
	}
	return a
}

func operationOptions(c *cli.Context, a *deployconfig.Answers) (deploy.Options, error) {
	hv, err := openHypervisor(c, a)
	if err != nil {
		return deploy.Options{}, err
	}
	trusted, err := trustedKey(c)
	if err != nil {
		return deploy.Options{}, err
	}
	edgeAddr, err := edgeAddress(c)
	if err != nil {
		return deploy.Options{}, err
	}
	return deploy.Options{
		Root: state.FromEnv(), Hypervisor: hv, Edge: nginxFromFlags(c), EdgeAddress: edgeAddr,
		Trusted: trusted, InsecureLocal: c.Bool("insecure-local"), Registry: registryOptions(c),
		Progress: c.App.ErrWriter, Terminal: isTerminal(c.App.ErrWriter),
		HealthTimeout: c.Duration("health-timeout"), DrainTimeout: c.Duration("drain-timeout"),
	}, nil
}

// interruptible ends ctx on Ctrl+C or SIGTERM: the operation then undoes
// (or finishes) what it started before returning.
func interruptible(c *cli.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
}

// confirm asks a yes/no question on the terminal; off a terminal there is
// no one to ask, and --yes is the answer.
func confirm(c *cli.Context) func(string) (bool, error) {
	in, ok := c.App.Reader.(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return nil
	}
	return func(question string) (bool, error) {
		fmt.Fprintf(c.App.ErrWriter, "%s [y/N] ", question)
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return false, err
		}
		answer := strings.ToLower(strings.TrimSpace(line))
		return answer == "y" || answer == "yes", nil
	}
}

// operationExit gives an instance operation's refusals their exit status.
func operationExit(err error) error {
	switch {
	case err == nil:
		return nil
	case state.IsLocked(err):
		return cli.Exit(err.Error(), exitLocked)
	case errors.Is(err, backup.ErrCorrupt), errors.Is(err, backup.ErrUnsafe):
		return cli.Exit("refused: "+err.Error(), exitVerify)
	case errors.Is(err, deploy.ErrNoInstance), errors.Is(err, deploy.ErrNotConfirmed), errors.Is(err, deploy.ErrNothingToRollBack):
		return usageError{err}
	}
	return deployExit(err)
}
