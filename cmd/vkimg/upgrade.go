package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vkimg/vkimg/internal/deploy"
)

func upgradeCommand() *cli.Command {
	return &cli.Command{
		Name:      "upgrade",
		Usage:     "upgrade an instance to the newest template of its channel, with no downtime",
		ArgsUsage: "[INSTANCE]",
		Description: `Finds the newest template in the instance's channel, which instance.yaml
names as template.version: "main", a version range such as "^2.5", or an
exact version such as "2.5.0", which then follows its compatible releases
(^2.5.0). When there is nothing newer it says "up to date" and exits 0.

Otherwise it pulls and verifies the template, lists the schema migrations it
adds, checks the node (2 GB free, memory for a second container, nginx),
backs the instance up with the running version (the archive's path is
printed at the end; "vkimg backups" lists it), starts the new version in the
idle slot on the same data volume (it migrates the database), checks its
health (version, page, MCP, database), switches nginx to it, proves it
answers through nginx, lets requests in flight on the old version finish (a
large upload included), and keeps the old version stopped for
"vkimg rollback".

If any step fails, or on Ctrl+C, the upgrade rolls back by itself: before
the switch the new container is removed and, if it had migrated the
database, the pre-upgrade backup is restored; after the switch nginx goes
back to the old version. If vkimg is killed, the next vkimg command on the
instance finishes or undoes the upgrade. INSTANCE may be left out when the
node has only one.

--check only reports the newest version and the migrations an upgrade
would run, and changes nothing (exit 0 either way).`,
		Flags: append(instanceFlags(),
			&cli.BoolFlag{Name: "check", Usage: "only report the newest version and its migrations; change nothing"},
			&cli.StringFlag{Name: "to", Usage: "upgrade to this `VERSION` or channel instead of the instance's"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
		),
		Action: func(c *cli.Context) error { return onInstance(runUpgrade, printUpgrade(c))(c) },
	}
}

func runUpgrade(ctx context.Context, c *cli.Context, name string, o deploy.Options) (*deploy.UpgradeResult, error) {
	uo := deploy.UpgradeOptions{Options: o, To: c.String("to")}
	if c.Bool("check") {
		return deploy.CheckUpgrade(ctx, name, uo)
	}
	return deploy.Upgrade(ctx, name, uo)
}

func printUpgrade(c *cli.Context) func(io.Writer, *deploy.UpgradeResult) {
	return func(w io.Writer, res *deploy.UpgradeResult) {
		switch {
		case res.UpToDate:
			fmt.Fprintf(w, "%s is up to date (version %s)\n", res.Name, res.From)
		case c.Bool("check"):
			fmt.Fprintf(w, "%s: version %s is available (running %s)\n", res.Name, res.To, res.From)
			if len(res.Migrations) == 0 {
				fmt.Fprintln(w, "  no schema migrations: a rollback would be instant")
			} else {
				fmt.Fprintf(w, "  schema migrations it adds: %s\n  (a rollback would restore the pre-upgrade backup)\n", strings.Join(res.Migrations, ", "))
			}
			fmt.Fprintf(w, "run `vkimg upgrade %s` to upgrade\n", res.Name)
		default:
			fmt.Fprintf(w, "\n%s upgraded from %s to %s (slot %s, container %d)\n", res.Name, res.From, res.To, res.Slot, res.ContainerID)
			fmt.Fprintf(w, "  pre-upgrade backup: %s\n", res.Backup)
			fmt.Fprintf(w, "  %s is kept stopped: `vkimg rollback %s` returns to it\n", res.From, res.Name)
		}
	}
}

func rollbackCommand() *cli.Command {
	return &cli.Command{
		Name:      "rollback",
		Usage:     "return an instance to the version its last upgrade replaced",
		ArgsUsage: "[INSTANCE]",
		Description: `Starts the previous version, which the last upgrade kept stopped, checks
its health, switches nginx back to it and stops the newer version. When
that upgrade added no schema migrations this takes seconds and the data
stays as it is.

When the newer version migrated the database, the previous one needs the
data as it was before the upgrade: the rollback names the migrations, warns
that restoring the pre-upgrade backup loses everything written since the
upgrade, and goes on only when you answer "y" on the terminal or pass --yes
(with no terminal to ask and no --yes, it changes nothing and exits 2). It
then stops the newer version, restores the backup, starts the previous one
and switches nginx.

Only the last upgrade can be rolled back: after a deploy, a rollback or a
restore there is nothing to roll back to (exit 2). If vkimg is killed, the
next vkimg command on the instance finishes the rollback. INSTANCE may be
left out when the node has only one.`,
		Flags: append(instanceFlags(), yesFlag,
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"}),
		Action: func(c *cli.Context) error {
			return onInstance(func(ctx context.Context, c *cli.Context, name string, o deploy.Options) (*deploy.RollbackResult, error) {
				return deploy.Rollback(ctx, name, deploy.RollbackOptions{Options: o, Yes: c.Bool("yes"), Confirm: confirm(c)})
			}, func(w io.Writer, res *deploy.RollbackResult) {
				fmt.Fprintf(w, "\n%s rolled back from %s to %s (slot %s, container %d)\n", res.Name, res.From, res.To, res.Slot, res.ContainerID)
				if res.Restored != "" {
					fmt.Fprintf(w, "  data restored from %s\n", res.Restored)
				}
			})(c)
		},
	}
}
