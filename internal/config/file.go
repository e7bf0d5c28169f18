package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// fileValue is one setting read from the YAML file, with its line for
// error messages.
type fileValue struct {
	value string
	line  int
}

// readFile reads the YAML file given by --config: one mapping from setting
// names (the flag names) to single values. A value is taken as its flag
// would take it on the command line (yaml's scalar text, so 1073741824 and
// "1073741824" are the same); null or "" is the empty string, which
// disables a listener. Unknown keys, repeated keys and nested values are
// errors, so a typo cannot silently fall back to a default.
func readFile(path string) (map[string]fileValue, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parseFile(path, data)
}

func parseFile(path string, data []byte) (map[string]fileValue, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) { // an empty file sets nothing
			return map[string]fileValue{}, nil
		}
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("config: %s:%d: more than one YAML document", path, extra.Line)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return map[string]fileValue{}, nil // only comments
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config: %s:%d: want a mapping of setting names to values (node-id: 2)", path, root.Line)
	}
	known := map[string]bool{}
	for _, n := range Names()[1:] {
		known[n] = true
	}
	out := map[string]fileValue{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		name := k.Value
		switch {
		case k.Kind != yaml.ScalarNode:
			return nil, fmt.Errorf("config: %s:%d: keys must be setting names", path, k.Line)
		case name == "config":
			return nil, fmt.Errorf("config: %s:%d: a config file cannot name another (config)", path, k.Line)
		case !known[name]:
			return nil, fmt.Errorf("config: %s:%d: unknown setting %q (the keys are the flag names: %s)",
				path, k.Line, name, strings.Join(Names()[1:], ", "))
		}
		if prev, dup := out[name]; dup {
			return nil, fmt.Errorf("config: %s:%d: %s is already set on line %d", path, k.Line, name, prev.line)
		}
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		if v.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("config: %s:%d: %s: want a single value, not a list or mapping (peers: \"1=a:40911,2=b:40912\")", path, v.Line, name)
		}
		val := v.Value
		if v.Tag == "!!null" {
			val = ""
		}
		out[name] = fileValue{value: val, line: k.Line}
	}
	return out, nil
}

// YAML renders the configuration as a file that --config reads back to the
// same configuration (ConfigFile itself is left out).
func (c Config) YAML() []byte {
	root := &yaml.Node{Kind: yaml.MappingNode}
	for _, kv := range c.Values()[1:] {
		root.Content = append(root.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Value: kv[0]},
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: kv[1]})
	}
	out, err := yaml.Marshal(root)
	if err != nil {
		panic(fmt.Sprintf("config: marshal YAML: %v", err)) // only plain scalars: cannot fail
	}
	return out
}
