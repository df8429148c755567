package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/vkimg/vkimg/internal/deploy"
	"github.com/vkimg/vkimg/internal/state"
)

func listCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list the deployed instances with their URL, version, active slot and state",
		Flags: append(hypervisorFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usagef("list: takes no arguments")
			}
			hv, err := openHypervisor(c, nil)
			if err != nil {
				return err
			}
			list, err := deploy.List(c.Context, state.FromEnv(), hv)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				if list == nil {
					list = []deploy.Instance{}
				}
				return printJSON(c.App.Writer, list)
			}
			w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tURL\tVERSION\tSLOT\tCT\tSTATE")
			for _, in := range list {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\n", in.Name, in.URL, in.Version, in.ActiveSlot, in.ContainerID, in.State)
			}
			return w.Flush()
		},
	}
}
