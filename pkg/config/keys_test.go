package config

import (
	"reflect"
	"strings"
)

// key is one key of a config file, found from the config structs' toml
// tags, so that a key added to a struct is known to every test that
// walks them.
type key struct {
	Table string // "server", "server.dns", "peer"; "" for a top-level key
	Name  string // "listen"
	Type  reflect.Type
}

// Path is the key as errors name it: "server.listen".
func (k key) Path() string {
	if k.Table == "" {
		return k.Name
	}
	return k.Table + "." + k.Name
}

// keyList lists every key of a config file type (ServerFile, ClientFile),
// tables first-level and nested, in declaration order. A struct-valued
// field (a table, an array of tables, an inline table such as dns) is
// itself a key of its parent and the table of its own keys.
func keyList(file any) []key {
	var out []key
	var walk func(table string, t reflect.Type)
	walk = func(table string, t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if name == "" || name == "-" {
				continue
			}
			if table != "" {
				out = append(out, key{table, name, f.Type})
			}
			if st := structOf(f.Type); st != nil {
				sub := name
				if table != "" {
					sub = table + "." + name
				}
				walk(sub, st)
			}
		}
	}
	walk("", reflect.TypeOf(file))
	return out
}

// structOf is the struct type behind t (through pointers and slices), or nil.
func structOf(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() == reflect.Struct {
		return t
	}
	return nil
}
