package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Each field of Server and Client says how a reload treats it, in a
// `reload` tag: "KEY,live" (a reload applies it), "KEY,restart" (only a
// restart does; a reload keeps the running value and names KEY in its
// warning), or "-" (not read from the file, e.g. the file's own path).
// KEY is the TOML key as an operator writes it ("server.listen", "log").
// A field derived from another key (Gateway from pool) carries that key.
// The tag is the one list of what needs a restart: a field added without
// one fails TestEveryConfigFieldHasAReloadPolicy.
const reloadTag = "reload"

// Reload policies of the reload tag.
const (
	ReloadLive    = "live"
	ReloadRestart = "restart"
)

// RestartOnly returns the TOML keys whose values differ between the
// running config and one loaded by a reload but which apply only at start,
// each once, in field order. Values are compared deeply.
func RestartOnly[C Server | Client](running, loaded *C) []string {
	a, b := reflect.ValueOf(running).Elem(), reflect.ValueOf(loaded).Elem()
	var keys []string
	for i := range a.NumField() {
		key, policy, err := reloadPolicy(a.Type().Field(i))
		if err != nil {
			panic(err) // a field without a policy is a programming error; the test catches it first
		}
		if policy != ReloadRestart || slices.Contains(keys, key) {
			continue
		}
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			keys = append(keys, key)
		}
	}
	return keys
}

// reloadPolicy reads a field's reload tag: its TOML key and policy, or
// "" and "" for a field that is not a key ("-").
func reloadPolicy(f reflect.StructField) (key, policy string, err error) {
	tag, ok := f.Tag.Lookup(reloadTag)
	if !ok {
		return "", "", fmt.Errorf("config: field %s has no %s tag (say \"KEY,live\", \"KEY,restart\" or \"-\")", f.Name, reloadTag)
	}
	if tag == "-" {
		return "", "", nil
	}
	key, policy, _ = strings.Cut(tag, ",")
	if key == "" || (policy != ReloadLive && policy != ReloadRestart) {
		return "", "", fmt.Errorf("config: field %s: bad %s tag %q (want \"KEY,live\", \"KEY,restart\" or \"-\")", f.Name, reloadTag, tag)
	}
	return key, policy, nil
}
