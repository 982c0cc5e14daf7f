// A kubelet image credential provider plugin for tests: it answers every request with the
// credentials in its environment, and appends the image it was asked for to $PLUGIN_LOG.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

func main() {
	var req struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Image      string `json:"image"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "bad request:", err)
		os.Exit(1)
	}
	if log := os.Getenv("PLUGIN_LOG"); log != "" {
		f, err := os.OpenFile(log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err == nil {
			fmt.Fprintln(f, req.Image)
			_ = f.Close()
		}
	}
	if msg := os.Getenv("PLUGIN_FAIL"); msg != "" {
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(3)
	}
	if out := os.Getenv("PLUGIN_RAW"); out != "" {
		fmt.Print(out)
		return
	}
	host, _, _ := strings.Cut(req.Image, "/")
	resp := map[string]any{
		"apiVersion":   req.APIVersion,
		"kind":         "CredentialProviderResponse",
		"cacheKeyType": envOr("PLUGIN_KEY_TYPE", "Registry"),
		"auth": map[string]any{
			envOr("PLUGIN_AUTH_KEY", host): map[string]string{"username": os.Getenv("PLUGIN_USER"), "password": os.Getenv("PLUGIN_PASSWORD")},
		},
	}
	if d := os.Getenv("PLUGIN_DURATION"); d != "" {
		resp["cacheDuration"] = d
	}
	_ = json.NewEncoder(os.Stdout).Encode(resp)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
