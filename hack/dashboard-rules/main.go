// Command dashboard-rules writes every query of a Grafana dashboard as a Prometheus recording
// rule, so that `promtool check rules` checks the dashboard's PromQL (hack/check-monitoring.sh).
// Grafana's interval variables are replaced by a fixed range and the $job variable by a regex.
//
//	go run ./hack/dashboard-rules config/grafana/imagegate.json > rules.yaml
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: dashboard-rules DASHBOARD.json")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[1]) //nolint:gosec // the dashboard the caller names
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var dash struct {
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h", "$job", ".+")
	var b strings.Builder
	b.WriteString("groups:\n- name: dashboard\n  rules:\n")
	n := 0
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				if t.Expr == "" {
					fmt.Fprintf(os.Stderr, "%s: panel %q, query %s has no expression\n", os.Args[1], p.Title, t.RefID)
					os.Exit(1)
				}
				n++
				q, _ := json.Marshal(vars.Replace(t.Expr)) // a JSON string is a YAML string
				fmt.Fprintf(&b, "  # %s, query %s\n  - record: dashboard:query_%d\n    expr: %s\n", p.Title, t.RefID, n, q)
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	if n == 0 {
		fmt.Fprintf(os.Stderr, "%s: no queries\n", os.Args[1])
		os.Exit(1)
	}
	fmt.Print(b.String())
}
