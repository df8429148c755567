package pvesim

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// formats are the named formats of Proxmox's JSONSchema (PVE::JSONSchema,
// PVE::Storage, pve-container) that parameters on the simulated paths use.
// A value in a format not listed here is refused: the simulator must never
// accept what Proxmox would refuse.
var formats = map[string]func(string) error{
	"pve-node":                 matchFormat(`^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$`, "value does not look like a valid node name"),
	"pve-vmid":                 matchFormat(`^[1-9][0-9]{2,8}$`, "value does not look like a valid VM ID"),
	"pve-storage-id":           matchFormat(`^(?i)[a-z][a-z0-9\-_.]*[a-z0-9]$`, "storage ID '%s' contains illegal characters"),
	"pve-configid":             checkConfigID,
	"pve-configid-list":        checkConfigIDList,
	"pve-poolid":               matchFormat(`^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+){0,2}$`, "pool name '%s' contains invalid characters"),
	"disk-size":                matchFormat(`^(\d+(\.\d+)?)([KMGT])?$`, "unable to parse size '%s'"),
	"dns-name":                 matchFormat(`^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)$`, "value does not look like a valid DNS name"),
	"mac-addr":                 matchFormat(`^(?i)[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$`, "value does not look like a valid unicast MAC address"),
	"pve-volume-id":            matchFormat(`^(?i)[a-z][a-z0-9\-_.]*[a-z0-9]:.+$`, "unable to parse volume ID '%s'"),
	"pve-storage-content":      checkContent,
	"pve-storage-content-list": checkContentList,
	"pve-lxc-mp-string":        checkMountPointString,
	"ipv4":                     checkIP(true),
	"ipv6":                     checkIP(false),
	"pve-ipv4-config":          checkIPConfig(true, "dhcp", "manual"),
	"pve-ipv6-config":          checkIPConfig(false, "auto", "dhcp", "manual"),
	"pve-tag-list":             checkTagList,
}

func matchFormat(pattern, msg string) func(string) error {
	re := regexp.MustCompile(pattern)
	return func(v string) error {
		if !re.MatchString(v) {
			if strings.Contains(msg, "%s") {
				return fmt.Errorf(msg, v)
			}
			return errors.New(msg)
		}
		return nil
	}
}

var checkConfigID = matchFormat(`^(?i)[a-z][a-z0-9_-]+$`, "invalid configuration ID '%s'")

// checkConfigIDList splits as PVE::Tools::split_list does: on commas,
// semicolons and white space.
func checkConfigIDList(v string) error {
	for _, id := range strings.Fields(strings.NewReplacer(",", " ", ";", " ").Replace(v)) {
		if err := checkConfigID(id); err != nil {
			return err
		}
	}
	return nil
}

var contentTypes = []string{"images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import"}

func checkContent(v string) error {
	if !contains(contentTypes, v) {
		return fmt.Errorf("invalid content type '%s'", v)
	}
	return nil
}

func checkContentList(v string) error {
	for _, c := range strings.Split(v, ",") {
		if err := checkContent(c); err != nil {
			return err
		}
	}
	return nil
}

// pve-container refuses mount point paths with "." or ".." components.
var dotComponent = regexp.MustCompile(`(^|/)\.\.?(/|$)`)

func checkMountPointString(v string) error {
	if dotComponent.MatchString(v) {
		return errors.New("mount point path contains illegal character sequences")
	}
	return nil
}

func checkIP(v4 bool) func(string) error {
	return func(v string) error {
		a, err := netip.ParseAddr(v)
		if err != nil || a.Is4() != v4 || a.Zone() != "" {
			return fmt.Errorf("value does not look like a valid IP%s address", map[bool]string{true: "v4", false: "v6"}[v4])
		}
		return nil
	}
}

func checkIPConfig(v4 bool, keywords ...string) func(string) error {
	return func(v string) error {
		if contains(keywords, v) {
			return nil
		}
		p, err := netip.ParsePrefix(v)
		if err != nil || p.Addr().Is4() != v4 {
			return fmt.Errorf("unable to parse IP%s/CIDR '%s'", map[bool]string{true: "v4", false: "v6"}[v4], v)
		}
		return nil
	}
}

var (
	tagSeparator = regexp.MustCompile(`[;, ]`)
	tagRE        = regexp.MustCompile(`^(?i)[a-z0-9_][a-z0-9_\-+.]*$`)
)

func checkTagList(v string) error {
	for _, t := range tagSeparator.Split(v, -1) {
		if t == "" {
			continue
		}
		if !tagRE.MatchString(t) {
			return fmt.Errorf("invalid tag '%s'", t)
		}
	}
	return nil
}
