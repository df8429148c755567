package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/vkimg/vkimg/internal/deployconfig"
	"github.com/vkimg/vkimg/internal/hypervisor"
	"github.com/vkimg/vkimg/internal/state"
)

// Instance is one deployed instance as `vkimg list` shows it.
type Instance struct {
	Name        string `json:"name"`
	URL         string `json:"url"`
	Version     string `json:"version"`
	ActiveSlot  string `json:"activeSlot"`
	ContainerID int    `json:"containerId"`
	// State is the active slot container's state, or "missing" when the
	// hypervisor no longer has it.
	State string `json:"state"`
}

// StateMissing is the state of an instance whose active container is gone.
const StateMissing = "missing"

// List reads every instance configuration under root and asks the
// hypervisor for the active slot's state. Directories without an instance
// configuration (a deploy in progress, or undone) are not instances.
func List(ctx context.Context, root state.Root, h hypervisor.Hypervisor) ([]Instance, error) {
	entries, err := os.ReadDir(root.Instances())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	var out []Instance
	for _, e := range entries {
		path := InstancePath(root, e.Name())
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			continue
		}
		c, err := deployconfig.ReadInstance(path)
		if err != nil {
			return nil, fmt.Errorf("list instances: %w", err)
		}
		slot := c.Slots.A
		if c.Slots.Active == "b" {
			slot = c.Slots.B
		}
		in := Instance{Name: c.Name, URL: c.URL, Version: slot.Version, ActiveSlot: c.Slots.Active, ContainerID: slot.ID}
		st, err := h.Status(ctx, slot.ID)
		switch {
		case errors.Is(err, hypervisor.ErrNotFound):
			in.State = StateMissing
		case err != nil:
			return nil, fmt.Errorf("list instances: %s: container %d: %w", c.Name, slot.ID, err)
		default:
			in.State = string(st.State)
		}
		out = append(out, in)
	}
	return out, nil
}
