package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vkimg/vkimg/internal/backup"
	"github.com/vkimg/vkimg/internal/deploy"
	"github.com/vkimg/vkimg/internal/state"
)

func backupCommand() *cli.Command {
	return &cli.Command{
		Name:      "backup",
		Usage:     "back up an instance while it serves",
		ArgsUsage: "[INSTANCE]",
		Description: `Writes one compressed, timestamped archive to
/var/lib/vkimg/backups/INSTANCE/: a consistent database dump (SQLite's
online backup, pg_dump, or mariadb-dump --single-transaction), Vikunja's
configuration and secrets, the attachments, instance.yaml, and a manifest
with the template version that made it and a checksum of every member.
The instance keeps serving. The archive appears only once complete (a
failure or Ctrl+C leaves no partial file). It holds secrets: it is 0600,
keep copies as safe as the node.

It prints the archive's path; "vkimg backups" lists the archives and
"vkimg restore ARCHIVE" restores one. INSTANCE may be left out when the
node has only one.

PostgreSQL and MariaDB instances need the client tools on the node
(postgresql-client: pg_dump, pg_restore; mariadb-client: mariadb-dump).`,
		Flags: append(instanceFlags(), &cli.BoolFlag{Name: "json", Usage: "print the archive's details as JSON"}),
		Action: onInstance(func(ctx context.Context, _ *cli.Context, name string, o deploy.Options) (backupJSON, error) {
			info, err := deploy.Backup(ctx, name, o)
			if err != nil {
				return backupJSON{}, err
			}
			return toBackupJSON(*info), nil
		}, func(w io.Writer, b backupJSON) { fmt.Fprintln(w, b.Path) }),
	}
}

func backupsCommand() *cli.Command {
	return &cli.Command{
		Name:      "backups",
		Usage:     "list backups with their times, versions and sizes",
		ArgsUsage: "[INSTANCE]",
		Description: `Lists the archives in /var/lib/vkimg/backups (of INSTANCE, or of every
instance), newest first: when each was taken, by which template version,
whether by hand or before an upgrade, and its size. An archive that cannot
be read is listed with the problem. "vkimg restore ARCHIVE" restores one.`,
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return tooManyArgs(c, "at most one INSTANCE")
			}
			list, err := deploy.ListBackups(state.FromEnv(), c.Args().First())
			if err != nil {
				return err
			}
			if c.Bool("json") {
				out := make([]backupJSON, 0, len(list))
				for _, b := range list {
					out = append(out, toBackupJSON(b))
				}
				return printJSON(c.App.Writer, out)
			}
			w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TAKEN\tINSTANCE\tVERSION\tKIND\tSIZE\tARCHIVE")
			for _, b := range list {
				if b.Err != nil {
					fmt.Fprintf(w, "?\t?\t?\t?\t%s\t%s (unreadable: %v)\n", backup.HumanSize(b.Size), b.Path, b.Err)
					continue
				}
				m := b.Manifest
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Created.Local().Format(time.DateTime), m.Instance, m.Template.Version, m.Kind, backup.HumanSize(b.Size), b.Path)
			}
			return w.Flush()
		},
	}
}

type backupJSON struct {
	Path     string    `json:"path"`
	Size     int64     `json:"size"`
	Instance string    `json:"instance,omitempty"`
	Created  time.Time `json:"created,omitzero"`
	Version  string    `json:"version,omitempty"`
	Kind     string    `json:"kind,omitempty"`
	Database string    `json:"database,omitempty"`
	Error    string    `json:"error,omitempty"`
}

func toBackupJSON(b backup.Info) backupJSON {
	out := backupJSON{Path: b.Path, Size: b.Size}
	if b.Err != nil {
		out.Error = b.Err.Error()
		return out
	}
	m := b.Manifest
	out.Instance, out.Created, out.Version, out.Kind, out.Database = m.Instance, m.Created, m.Template.Version, m.Kind, m.Database.Type
	return out
}

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "restore an instance from a backup archive, here or on another node",
		ArgsUsage: "ARCHIVE",
		Description: `Verifies the whole archive first (format, every member's checksum, no
absolute paths, no "..", no links) and refuses it, changing nothing, if
anything is wrong (exit 4). It then pulls and verifies the exact template
that made the backup.

When the instance exists on this node, restoring replaces its data with the
archive's, and everything written since the backup is lost: it asks on the
terminal first, and scripts pass --yes (with no terminal to ask and no
--yes, it changes nothing and exits 2). The instance stops, the data volume
and an external database are restored, the backup's template version starts
(in the idle slot when it differs from the running one) and nginx sends
traffic to it once healthy.

When the node does not have the instance (a new node, or after losing the
old one), it is deployed from the archive: its instance.yaml (name, URL,
database, resources, network, ports), its data and database, and that
template version. A self-signed certificate is made anew; a certificate of
your own must be at the same paths on this node. The deploy flags --node,
--storage, --template-storage, --bridge, --address (dhcp when only
--bridge is given), --address-b, --gateway, --http-port, --https-port with
--url, --tls-cert, --tls-key, --self-signed and --template place it on this
node instead of where the archive's instance.yaml had it.`,
		Flags: append(append(instanceFlags(), placementFlags()...), yesFlag, &cli.BoolFlag{Name: "json", Usage: "print the result as JSON"}),
		Action: func(c *cli.Context) error {
			switch {
			case c.NArg() == 0:
				return usagef("restore: give the ARCHIVE to restore (`vkimg backups` lists them)")
			case c.NArg() > 1:
				return tooManyArgs(c, "one ARCHIVE")
			}
			archive := c.Args().First()
			if _, err := os.Stat(archive); err != nil {
				return usagef("restore: %w", err)
			}
			// Which instance it is decides where it goes; restore verifies
			// the whole archive before anything changes.
			m, err := backup.ReadManifest(archive)
			if err != nil {
				return operationExit(err)
			}
			place, err := placementFromFlags(c)
			if err != nil {
				return err
			}
			where := placement(m.Instance)
			if where.Node == "" { // not on this node: deployed where the flags say
				where.Node, where.Storage = place.Node, place.Storage
			}
			o, err := operationOptions(c, where)
			if err != nil {
				return err
			}
			ctx, stop := interruptible(c)
			defer stop()
			res, err := deploy.Restore(ctx, archive, deploy.RestoreOptions{Options: o, Yes: c.Bool("yes"), Confirm: confirm(c), Placement: place})
			if err != nil {
				return operationExit(err)
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, res)
			}
			fmt.Fprintf(c.App.Writer, "\n%s restored from %s (backup of %s, version %s) at %s\n",
				res.Name, archive, res.Created.Local().Format(time.DateTime), res.Version, res.URL)
			return nil
		},
	}
}
