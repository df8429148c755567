// Command vkimg builds, publishes, deploys, upgrades, rolls back, checks,
// backs up and restores immutable Vikunja templates on Proxmox VE.
//
// This package only parses flags and wires the internal packages together.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

// Exit codes, documented in the help text below.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed; the message says what to do next
	exitUsage   = 2 // bad flags, arguments or configuration; nothing changed
	exitLocked  = 3 // another vkimg operation holds the instance lock
	exitVerify  = 4 // a signature, digest or archive check failed; nothing used
)

// usageError marks errors caused by the caller's input, reported with exitUsage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func newApp() *cli.App {
	return &cli.App{
		Name:  "vkimg",
		Usage: "immutable, signed Vikunja templates for Proxmox VE",
		Description: `vkimg builds Vikunja (backend, frontend and MCP server) into signed,
reproducible Debian 12 container templates, publishes them as standard OCI
images that Proxmox VE, skopeo, crane and cosign all understand, and deploys
them on a Proxmox VE node (or any LXC host) behind nginx with TLS, using a
template only after its signature and digests check out.

EXIT STATUS
   0  success
   1  the operation failed; the message says what to do next
   2  bad flags, arguments or configuration; nothing was changed
   3  another vkimg operation holds the lock; the message names it
   4  a signature, digest or integrity check failed; nothing was used

ENVIRONMENT
   VKIMG_ROOT   state directory (default /var/lib/vkimg); when set, the log
                directory and the trusted key live under it too (log/, etc/)

FILES
   /var/lib/vkimg/templates   local OCI image layout of built templates
   /var/lib/vkimg/cache       pulled templates, verified, by digest
   /var/lib/vkimg/instances   one directory per instance: instance.yaml, data volume, journal
   /var/lib/vkimg/backups     backup archives, one directory per instance
   /var/log/vkimg/NAME.log    operation log of instance NAME
   /etc/vkimg/trusted.pub     the public key templates must be signed with`,
		HideHelpCommand:      true,
		EnableBashCompletion: true,
		Commands:             commands(),
		ExitErrHandler:       func(*cli.Context, error) {},
	}
}

// commands lists every subcommand; each lives in its own file.
func commands() []*cli.Command {
	return []*cli.Command{
		buildCommand(),
		keysCommand(), publishCommand(), pullCommand(), templatesCommand(),
		previewCommand(), deployCommand(), listCommand(),
		upgradeCommand(), rollbackCommand(), backupCommand(), backupsCommand(), restoreCommand(),
	}
}

func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return exitFailure
}

func main() {
	err := newApp().Run(os.Args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vkimg:", err)
	}
	os.Exit(exitCode(err))
}
