// Command pvesh is the Proxmox API simulator's stand-in for a node's own
// pvesh and (when invoked as "pct") pct exec. It talks to a running
// simulator as root@pam over the Unix socket named by $PVESIM_SOCKET, so
// that vkimg's node-local transport runs for real in tests.
//
//	pvesh <get|create|set|delete> <api-path> [--param value ...] [--output-format json|json-pretty]
//	pct exec <vmid> -- <command> [args ...]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/vkimg/vkimg/internal/pvesim"
)

// exitFailure is what Perl's die gives pvesh and pct.
const exitFailure = 255

func main() {
	socket := os.Getenv("PVESIM_SOCKET")
	if socket == "" {
		fail("PVESIM_SOCKET is not set: it names the simulator's Unix socket")
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
	}}
	var err error
	if filepath.Base(os.Args[0]) == "pct" {
		err = pct(client, os.Args[1:])
	} else {
		err = pvesh(client, os.Args[1:])
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, strings.TrimRight(msg, "\n"))
	os.Exit(exitFailure)
}

var verbs = map[string]string{"get": http.MethodGet, "create": http.MethodPost, "set": http.MethodPut, "delete": http.MethodDelete}

func pvesh(client *http.Client, args []string) error {
	if len(args) < 2 {
		return errors.New("usage: pvesh <get|create|set|delete> <api_path> [OPTIONS] [FORMAT_OPTIONS]")
	}
	method, ok := verbs[args[0]]
	if !ok {
		return fmt.Errorf("unknown command '%s'", args[0])
	}
	path := "/" + strings.Trim(args[1], "/")
	params := url.Values{}
	format := "text"
	for i := 2; i < len(args); i++ {
		name, ok := strings.CutPrefix(args[i], "--")
		if !ok || i+1 >= len(args) {
			return fmt.Errorf("400 unable to parse option '%s'", args[i])
		}
		i++
		if name == "output-format" {
			format = args[i]
			continue
		}
		params.Add(name, args[i])
	}
	if format != "json" && format != "json-pretty" {
		return fmt.Errorf("the simulator's pvesh supports only --output-format json or json-pretty, not '%s'", format)
	}
	u := "http://pvesim/api2/json" + escapePath(path)
	var body io.Reader
	if method == http.MethodGet || method == http.MethodDelete {
		if len(params) > 0 {
			u += "?" + params.Encode()
		}
	} else {
		body = strings.NewReader(params.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	var answer struct {
		Data   json.RawMessage   `json:"data"`
		Errors map[string]string `json:"errors"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		return fmt.Errorf("%s: %w", res.Status, err)
	}
	if res.StatusCode != http.StatusOK {
		// pvesh prints a plain die's message alone, an HTTP exception's
		// code and message, then one line per parameter error.
		msg := res.Status
		if res.StatusCode == http.StatusInternalServerError {
			msg = strings.TrimPrefix(msg, "500 ")
		}
		keys := make([]string, 0, len(answer.Errors))
		for k := range answer.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			msg += "\n" + k + ": " + strings.TrimRight(answer.Errors[k], "\n")
		}
		return errors.New(msg)
	}
	out := answer.Data
	if format == "json-pretty" {
		var b bytes.Buffer
		if err := json.Indent(&b, out, "", "   "); err != nil {
			return err
		}
		out = b.Bytes()
	}
	_, err = fmt.Println(string(out))
	return err
}

// escapePath escapes each segment: volume IDs and UPIDs contain ':'.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

func pct(client *http.Client, args []string) error {
	if len(args) < 4 || args[0] != "exec" || args[2] != "--" {
		return errors.New("usage: pct exec <vmid> -- <command> [args ...]")
	}
	vmid, err := strconv.Atoi(args[1])
	if err != nil {
		return fmt.Errorf("400 Parameter verification failed.\nvmid: type check ('integer') failed - got '%s'", args[1])
	}
	stdin, err := io.ReadAll(os.Stdin)
	if err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	body, err := json.Marshal(pvesim.ExecRequest{VMID: vmid, Argv: args[3:], Stdin: stdin})
	if err != nil {
		return err
	}
	res, err := client.Post("http://pvesim"+pvesim.ExecPath, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return errors.New(res.Status)
	}
	var out pvesim.ExecResponse
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return fmt.Errorf("exec answer: %w", err)
	}
	os.Stdout.Write(out.Stdout) //nolint:errcheck // nothing to do if stdout is gone
	os.Stderr.Write(out.Stderr) //nolint:errcheck // nothing to do if stderr is gone
	os.Exit(out.ExitCode)
	return nil
}
