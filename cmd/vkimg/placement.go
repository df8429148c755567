package main

import (
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/vkimg/vkimg/internal/deploy"
	"github.com/vkimg/vkimg/internal/deployconfig"
)

// placementFlags are the deploy flags that place an instance restored onto
// a node that does not have it: its archive names the old node's bridge,
// addresses, ports, storages, certificate and template source.
func placementFlags() []cli.Flag {
	names := []string{"node", "storage", "template-storage", "bridge", "address", "address-b", "gateway",
		"http-port", "https-port", "url", "tls-cert", "tls-key", "self-signed", "template"}
	var flags []cli.Flag
	for _, f := range deployconfig.Flags() {
		if slices.Contains(names, f.Names()[0]) {
			flags = append(flags, f)
		}
	}
	return flags
}

// placementFromFlags is what the placement flags given change.
func placementFromFlags(c *cli.Context) (deploy.Placement, error) {
	// No passwords: the archive holds the instance's own.
	a, err := deployconfig.FromContext(c, func(string) string { return "" })
	if err != nil {
		return deploy.Placement{}, usageError{err}
	}
	return deploy.Placement{
		Node: a.Node, Storage: a.Storage, Bridge: a.Network.Bridge,
		Address: a.Network.Address, AddressB: a.Network.AddressB, Gateway: a.Network.Gateway,
		Ports: a.Ports, URL: a.URL, TLS: a.TLS, TemplateSource: a.Template.Source,
	}, nil
}
