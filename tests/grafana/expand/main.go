// Command expand interpolates provisioning values the way Grafana does when it
// reads a provisioning YAML file, so tests can see what Grafana would see.
//
// It reads a JSON array of strings on stdin and writes the array of expanded
// strings on stdout. Go's standard library has no YAML parser, so the caller
// parses the file and sends every string scalar here.
//
// The semantics follow Grafana's pkg/services/provisioning/values/values.go
// (interpolateValue) and pkg/setting/expanders.go (ExpandVar):
//  1. the raw value is split on "$$"; each "$$" becomes one literal "$";
//  2. in each piece, Grafana's expanders run in priority order: first "env"
//     (both ${NAME} and $__env{NAME}), then "file" ($__file{PATH}, the file's
//     contents with surrounding space trimmed; a missing file is an error);
//  3. the result then goes through os.ExpandEnv, the real Go function.
//
// Step 3 runs on text that step 2 already substituted, so a ${VAR} whose value
// holds a "$" is expanded twice, while a bare $VAR is expanded once.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// reference matches what Grafana's expanders look for: "${ARG}" (empty kind)
// or "$__KIND{ARG}". Shell forms like ${NAME:-default} match too, with ARG
// "NAME:-default": a variable of that literal name, which never exists.
var reference = regexp.MustCompile(`\$(|__\w+){([^}]+)}`)

// expander resolves one reference's argument; kinds lists the reference
// kinds (the part between "$" and "{") it answers to.
type expander struct {
	kinds   []string
	resolve func(arg string) (string, error)
}

// Grafana's open-source expanders, in the order they run (priority -10, -5).
var expanders = []expander{
	{kinds: []string{"", "__env"}, resolve: envValue},
	{kinds: []string{"__file"}, resolve: fileValue},
}

func envValue(name string) (string, error) {
	value := os.Getenv(name)
	// Grafana falls back to the machine's name for an unset or empty HOSTNAME.
	if name == "HOSTNAME" && value == "" {
		return os.Hostname()
	}
	return value, nil
}

func fileValue(path string) (string, error) {
	contents, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(contents)), nil
}

func answers(e expander, kind string) bool {
	for _, k := range e.kinds {
		if k == kind {
			return true
		}
	}
	return false
}

// runExpanders applies each expander in turn. Each pass finds references in the
// text as the previous pass left it, and replaces the first occurrence of each
// matched reference, as Grafana's applyExpander does.
func runExpanders(text string) (string, error) {
	for _, e := range expanders {
		for _, m := range reference.FindAllStringSubmatch(text, -1) {
			if !answers(e, m[1]) {
				continue
			}
			value, err := e.resolve(m[2])
			if err != nil {
				return "", err
			}
			text = strings.Replace(text, m[0], value, 1)
		}
	}
	return text, nil
}

// expand is what Grafana stores for one provisioned string value.
func expand(raw string) (string, error) {
	pieces := strings.Split(raw, "$$")
	for i, piece := range pieces {
		expanded, err := runExpanders(piece)
		if err != nil {
			return "", fmt.Errorf("failed to interpolate value %q: %w", raw, err)
		}
		pieces[i] = os.ExpandEnv(expanded)
	}
	return strings.Join(pieces, "$"), nil
}

func main() {
	var raws []string
	if err := json.NewDecoder(os.Stdin).Decode(&raws); err != nil {
		fmt.Fprintln(os.Stderr, "expand: stdin must be a JSON array of strings:", err)
		os.Exit(2)
	}
	out := make([]string, len(raws))
	for i, raw := range raws {
		expanded, err := expand(raw)
		if err != nil {
			// Grafana refuses the whole provisioning file in this case.
			fmt.Fprintln(os.Stderr, "expand:", err)
			os.Exit(1)
		}
		out[i] = expanded
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "expand:", err)
		os.Exit(1)
	}
}
