// Package mcpclient sends single JSON-RPC requests to an MCP server over
// the Streamable HTTP transport: enough for health checks (the initialize
// handshake) and for scripted tool calls, with no session to keep.
package mcpclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Call posts one request with method and params to url and decodes its
// result into out. A JSON-RPC error comes back as an error.
func Call(ctx context.Context, client *http.Client, url, method string, params, out any) error {
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	if err != nil {
		return fmt.Errorf("MCP %s: %w", method, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("MCP %s: %w", method, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("MCP %s: %w", method, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("MCP %s: %w", method, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("MCP %s: status %s: %s", method, resp.Status, bytes.TrimSpace(answer))
	}
	payload := answer
	// Streamable HTTP answers with JSON or with an SSE stream of events.
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		payload = nil
		for line := range bytes.SplitSeq(answer, []byte("\n")) {
			if d, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				payload = bytes.TrimSpace(d)
				break
			}
		}
	}
	var rpc struct {
		ID     int                       `json:"id"`
		Result json.RawMessage           `json:"result"`
		Error  *struct{ Message string } `json:"error"`
	}
	if err := json.Unmarshal(payload, &rpc); err != nil {
		return fmt.Errorf("MCP %s: answer is not JSON-RPC: %w", method, err)
	}
	if rpc.Error != nil {
		return fmt.Errorf("MCP %s: %s", method, rpc.Error.Message)
	}
	if rpc.ID != 1 || rpc.Result == nil {
		return fmt.Errorf("MCP %s: answer without a result: %s", method, payload)
	}
	if err := json.Unmarshal(rpc.Result, out); err != nil {
		return fmt.Errorf("MCP %s: result: %w", method, err)
	}
	return nil
}

// Initialize performs the initialize handshake and checks that the server
// names itself and offers tools.
func Initialize(ctx context.Context, client *http.Client, url string) error {
	var res struct {
		ProtocolVersion string                `json:"protocolVersion"`
		ServerInfo      struct{ Name string } `json:"serverInfo"`
		Capabilities    map[string]any        `json:"capabilities"`
	}
	err := Call(ctx, client, url, "initialize", map[string]any{
		"protocolVersion": "2025-03-26", "capabilities": map[string]any{},
		"clientInfo": map[string]string{"name": "vkimg", "version": "1"},
	}, &res)
	if err != nil {
		return err
	}
	if res.ProtocolVersion == "" || res.ServerInfo.Name == "" {
		return fmt.Errorf("MCP initialize: incomplete answer")
	}
	if res.Capabilities["tools"] == nil {
		return fmt.Errorf("MCP initialize: server offers no tools")
	}
	return nil
}
