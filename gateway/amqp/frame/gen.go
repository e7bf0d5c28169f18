//go:build ignore

// gen.go writes methods_gen.go from the AMQP 0-9-1 specification XML that
// the github.com/rabbitmq/amqp091-go module ships
// (spec/amqp0-9-1.stripped.extended.xml, RabbitMQ's extended edition).
// Run it with `go generate` in this directory; the module must be in go.mod
// and the module cache.
package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"go/format"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

const module = "github.com/rabbitmq/amqp091-go"
const specPath = "spec/amqp0-9-1.stripped.extended.xml"

type xmlSpec struct {
	Domains []xmlDomain `xml:"domain"`
	Classes []xmlClass  `xml:"class"`
}

type xmlDomain struct {
	Name string `xml:"name,attr"`
	Type string `xml:"type,attr"`
}

type xmlClass struct {
	Name    string      `xml:"name,attr"`
	Index   int         `xml:"index,attr"`
	Methods []xmlMethod `xml:"method"`
}

type xmlMethod struct {
	Name        string     `xml:"name,attr"`
	Index       int        `xml:"index,attr"`
	Synchronous string     `xml:"synchronous,attr"`
	Content     string     `xml:"content,attr"`
	Fields      []xmlField `xml:"field"`
}

type xmlField struct {
	Name     string `xml:"name,attr"`
	Domain   string `xml:"domain,attr"`
	Type     string `xml:"type,attr"`
	Reserved string `xml:"reserved,attr"`
}

// primitive describes how one AMQP primitive type is handled in Go.
type primitive struct {
	goType string
	read   string // reader method
	skip   string // statement consuming a reserved field
	write  string // appender function, called as write(dst, value)
	zero   string // a reserved field's value
	check  string // validation helper, if any
}

var primitives = map[string]primitive{
	"octet":     {"uint8", "octet", "r.octet()", "appendOctet", "0", ""},
	"short":     {"uint16", "short", "r.short()", "appendShort", "0", ""},
	"long":      {"uint32", "long", "r.long()", "appendLong", "0", ""},
	"longlong":  {"uint64", "longlong", "r.longlong()", "appendLonglong", "0", ""},
	"shortstr":  {"string", "shortstr", "r.skipShortstr()", "appendShortstr", `""`, "checkShortstr"},
	"longstr":   {"string", "longstr", "r.skipLongstr()", "appendLongstr", `""`, "checkLongstr"},
	"table":     {"Table", "table", "r.table()", "appendTableArg", "nil", "checkTable"},
	"timestamp": {"time.Time", "timestamp", "r.timestamp()", "appendTimestamp", "time.Unix(0, 0)", ""},
	"bit":       {"bool", "", "", "", "", ""},
}

// field is a resolved method argument.
type field struct {
	wire     string // dashed XML name
	goName   string // "" for reserved fields
	prim     string // primitive type name
	reserved bool
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("gen: ")
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module).Output()
	if err != nil {
		log.Fatalf("go list -m %s: %v", module, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		log.Fatalf("module %s is not in the module cache (go mod download %s)", module, module)
	}
	raw, err := os.ReadFile(filepath.Join(dir, specPath))
	if err != nil {
		log.Fatal(err)
	}
	var spec xmlSpec
	if err := xml.Unmarshal(raw, &spec); err != nil {
		log.Fatalf("parse %s: %v", specPath, err)
	}
	src, err := generate(&spec)
	if err != nil {
		log.Fatal(err)
	}
	formatted, err := format.Source(src)
	if err != nil {
		os.WriteFile("methods_gen.go.broken", src, 0o644)
		log.Fatalf("gofmt generated code (written to methods_gen.go.broken): %v", err)
	}
	if err := os.WriteFile("methods_gen.go", formatted, 0o644); err != nil {
		log.Fatal(err)
	}
}

// goName turns a dashed XML name into a Go identifier: "auto-delete" is
// AutoDelete, "class-id" ClassID, "nowait" NoWait.
func goName(s string) string {
	switch s {
	case "nowait":
		return "NoWait"
	}
	var b strings.Builder
	for _, part := range strings.Split(s, "-") {
		switch part {
		case "":
		case "id":
			b.WriteString("ID")
		default:
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}

// fieldGoName names a struct field. connection.close and channel.close
// carry class-id and method-id arguments, which would collide with the
// ClassID and MethodID methods of the Method interface; they are
// FailedClassID and FailedMethodID (the method that caused the close).
func fieldGoName(xmlName string) string {
	n := goName(xmlName)
	switch n {
	case "ClassID", "MethodID":
		return "Failed" + n
	}
	return n
}

func resolve(domains map[string]string, f xmlField) (string, error) {
	t := f.Type
	if t == "" {
		t = f.Domain
	}
	for range 10 {
		if _, ok := primitives[t]; ok {
			return t, nil
		}
		next, ok := domains[t]
		if !ok || next == t {
			break
		}
		t = next
	}
	if _, ok := primitives[t]; ok {
		return t, nil
	}
	return "", fmt.Errorf("field %q: cannot resolve domain %q", f.Name, t)
}

func generate(spec *xmlSpec) ([]byte, error) {
	domains := map[string]string{}
	for _, d := range spec.Domains {
		domains[d.Name] = d.Type
	}
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("// Code generated by gen.go; DO NOT EDIT.\n\n")
	p("// Source: %s %s\n\n", module, specPath)
	p("package frame\n\n")
	usesTime := false
	type entry struct {
		class, method int
		typ           string
	}
	var all []entry
	var body bytes.Buffer
	q := func(format string, args ...any) { fmt.Fprintf(&body, format, args...) }
	for _, c := range spec.Classes {
		for _, m := range c.Methods {
			typ := goName(c.Name) + goName(m.Name)
			all = append(all, entry{c.Index, m.Index, typ})
			var fields []field
			for _, xf := range m.Fields {
				prim, err := resolve(domains, xf)
				if err != nil {
					return nil, fmt.Errorf("%s.%s: %w", c.Name, m.Name, err)
				}
				if prim == "timestamp" {
					usesTime = true
				}
				f := field{wire: xf.Name, prim: prim, reserved: xf.Reserved == "1"}
				if !f.reserved {
					f.goName = fieldGoName(xf.Name)
				}
				fields = append(fields, f)
			}
			sync := m.Synchronous == "1"
			content := m.Content == "1"

			// Type.
			q("// %s is %s.%s (class %d, method %d).\n", typ, c.Name, m.Name, c.Index, m.Index)
			var sig []string
			for _, f := range fields {
				if f.reserved {
					sig = append(sig, f.wire+" (reserved)")
				} else {
					sig = append(sig, f.wire)
				}
			}
			if len(sig) > 0 {
				q("// Arguments on the wire: %s.\n", strings.Join(sig, ", "))
			} else {
				q("// It has no arguments.\n")
			}
			q("type %s struct {\n", typ)
			for _, f := range fields {
				if !f.reserved {
					q("\t%s %s // %s (%s)\n", f.goName, primitives[f.prim].goType, f.wire, f.prim)
				}
			}
			q("}\n\n")
			q("func (*%s) ClassID() uint16 { return %d }\n", typ, c.Index)
			q("func (*%s) MethodID() uint16 { return %d }\n", typ, m.Index)
			q("func (*%s) Name() string { return %q }\n", typ, c.Name+"."+m.Name)
			q("func (*%s) HasContent() bool { return %v }\n", typ, content)
			q("func (*%s) Synchronous() bool { return %v }\n\n", typ, sync)

			// Encoder.
			recv := "m"
			if len(fields) == 0 || allReserved(fields) {
				recv = ""
			}
			q("func (%s *%s) appendArgs(dst []byte) []byte {\n", recv, typ)
			for i := 0; i < len(fields); {
				f := fields[i]
				if f.prim == "bit" {
					j := i
					for j < len(fields) && fields[j].prim == "bit" && j-i < 8 {
						j++
					}
					q("\tvar bits%d uint8\n", i)
					for k := i; k < j; k++ {
						if !fields[k].reserved {
							q("\tif m.%s {\n\t\tbits%d |= 1 << %d\n\t}\n", fields[k].goName, i, k-i)
						}
					}
					q("\tdst = append(dst, bits%d)\n", i)
					i = j
					continue
				}
				pr := primitives[f.prim]
				if f.reserved {
					q("\tdst = %s(dst, %s) // %s\n", pr.write, pr.zero, f.wire)
				} else {
					q("\tdst = %s(dst, m.%s)\n", pr.write, f.goName)
				}
				i++
			}
			q("\treturn dst\n}\n\n")

			// Decoder.
			q("func (%s *%s) readArgs(r *reader) error {\n", recv, typ)
			for i := 0; i < len(fields); {
				f := fields[i]
				if f.prim == "bit" {
					j := i
					for j < len(fields) && fields[j].prim == "bit" && j-i < 8 {
						j++
					}
					used := false
					for k := i; k < j; k++ {
						used = used || !fields[k].reserved
					}
					if !used {
						q("\tr.octet()\n")
					} else {
						q("\tbits%d := r.octet()\n", i)
						for k := i; k < j; k++ {
							if !fields[k].reserved {
								q("\tm.%s = bits%d&(1<<%d) != 0\n", fields[k].goName, i, k-i)
							}
						}
					}
					i = j
					continue
				}
				pr := primitives[f.prim]
				if f.reserved {
					q("\t%s // %s\n", pr.skip, f.wire)
				} else {
					q("\tm.%s = r.%s()\n", f.goName, pr.read)
				}
				i++
			}
			q("\treturn r.err\n}\n\n")

			// Validation.
			var checks []field
			for _, f := range fields {
				if !f.reserved && primitives[f.prim].check != "" {
					checks = append(checks, f)
				}
			}
			if len(checks) == 0 {
				q("func (*%s) validate() error { return nil }\n\n", typ)
			} else {
				q("func (m *%s) validate() error {\n", typ)
				for _, f := range checks {
					q("\tif err := %s(%q, m.%s); err != nil {\n\t\treturn err\n\t}\n",
						primitives[f.prim].check, f.wire, f.goName)
				}
				q("\treturn nil\n}\n\n")
			}
		}
	}
	if usesTime {
		p("import \"time\"\n\n")
	}
	b.Write(body.Bytes())

	p("// newMethod returns a zero method for a class and method id, or nil.\n")
	p("func newMethod(classID, methodID uint16) Method {\n")
	p("\tswitch uint32(classID)<<16 | uint32(methodID) {\n")
	for _, e := range all {
		p("\tcase %d<<16 | %d:\n\t\treturn new(%s)\n", e.class, e.method, e.typ)
	}
	p("\t}\n\treturn nil\n}\n\n")
	p("// allMethods returns one zero value of every method type, in spec order.\n")
	p("func allMethods() []Method {\n\treturn []Method{\n")
	for _, e := range all {
		p("\t\tnew(%s),\n", e.typ)
	}
	p("\t}\n}\n")
	return b.Bytes(), nil
}

func allReserved(fields []field) bool {
	for _, f := range fields {
		if !f.reserved {
			return false
		}
	}
	return true
}
