package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/vkimg/vkimg/internal/preview"
	"github.com/vkimg/vkimg/internal/state"
)

func previewCommand() *cli.Command {
	return &cli.Command{
		Name:      "preview",
		Usage:     "boot a template in a throwaway local LXC container",
		ArgsUsage: "TEMPLATE.tar.zst",
		Description: `Boots the plain rootfs template that vkimg build wrote in an unprivileged
local LXC container with SQLite and a generated admin password, waits until
every health check of the template passes, and prints where it answers.
A second preview replaces the first; --remove deletes it. Needs root and
LXC. For an instance that stays, with TLS and upgrades, use deploy.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "bridge", Value: "vkimg0", Usage: "bridge to attach to; made (without NAT) when missing"},
			&cli.StringFlag{Name: "subnet", Value: "10.77.0.1/24", Usage: "the bridge's own address and subnet"},
			&cli.BoolFlag{Name: "remove", Usage: "remove the preview container and its data"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON (includes the admin password)"},
		},
		Action: func(c *cli.Context) error {
			root := state.FromEnv()
			if c.Bool("remove") {
				return preview.Remove(c.Context, root)
			}
			if c.NArg() != 1 {
				return usagef("preview: want one template file (debian-12-NAME_VERSION-1_amd64.tar.zst)")
			}
			subnet, err := netip.ParsePrefix(c.String("subnet"))
			if err != nil || !subnet.Addr().Is4() {
				return usagef("--subnet %q: want an IPv4 address with prefix length, like 10.77.0.1/24", c.String("subnet"))
			}
			res, err := preview.Run(c.Context, preview.Options{
				Root: root, Template: c.Args().First(), Bridge: c.String("bridge"), Subnet: subnet, Progress: os.Stderr,
			})
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return json.NewEncoder(c.App.Writer).Encode(struct {
					preview.Result
					AdminPassword string `json:"adminPassword"`
				}{res, res.AdminPassword})
			}
			fmt.Fprintf(c.App.Writer, "Template %s answers at %s\nLog in as %s with password %s\nRemove it with: vkimg preview --remove\n",
				res.Version, res.URL, res.AdminUser, res.AdminPassword)
			return nil
		},
	}
}
