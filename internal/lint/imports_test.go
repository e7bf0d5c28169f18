// Package lint holds tests that enforce the architecture rules of docs/architecture.md
// mechanically, so `go test ./...` checks them without any external linter
// (pebble's internal/lint does the same).
package lint

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// pkg is the subset of `go list -json` output the import rules read.
type pkg struct {
	ImportPath   string
	Imports      []string // direct imports of the non-test files
	Deps         []string // transitive imports of the non-test files
	TestImports  []string
	XTestImports []string
}

// TestImportDirection enforces the one-way import graph:
//
//	gateway/* -> core/broker -> core/{txn,raft,log}
//
// (a) nothing under core/ imports gateway/;
// (b) gateway/X/... never imports gateway/Y/... for Y != X;
// (c) leaf packages (import path ending in /vfs, /batch, /command, /frame or
// /packet) depend on no networking package; those under gateway/ depend on
// nothing under core/; core/log/batch depends on nothing from this module.
//
// (a) and (b) also cover test imports; (c) covers the transitive
// dependencies of the non-test files, which is what a leaf package ships.
func TestImportDirection(t *testing.T) {
	root := moduleRoot(t)
	mod := modulePath(t, root)
	pkgs := listPackages(t, root)
	for _, v := range importViolations(mod, pkgs) {
		t.Error(v)
	}
}

// TestImportRulesFire feeds importViolations a made-up package graph that
// breaks every rule, so the rules cannot silently match nothing while the
// real tree has no gateway code yet.
func TestImportRulesFire(t *testing.T) {
	const mod = "example.com/m"
	pkgs := []pkg{
		{ImportPath: mod + "/core/broker", Imports: []string{mod + "/gateway/mqtt"}},
		{ImportPath: mod + "/core/txn", XTestImports: []string{mod + "/gateway/amqp/frame"}},
		{ImportPath: mod + "/gateway/mqtt", Imports: []string{mod + "/gateway/amqp"}},
		{ImportPath: mod + "/gateway/amqp", TestImports: []string{mod + "/gateway/remoting/command"}},
		{ImportPath: mod + "/gateway/amqp/frame", Imports: []string{"net"}, Deps: []string{"net"}},
		{ImportPath: mod + "/gateway/mqtt/packet", Imports: []string{mod + "/gateway/mqtt/util"},
			Deps: []string{mod + "/gateway/mqtt/util", "net/http"}},
		{ImportPath: mod + "/gateway/remoting/command", Imports: []string{mod + "/core/log"},
			Deps: []string{mod + "/core/log", mod + "/core/log/vfs"}},
		{ImportPath: mod + "/gateway/y/packet", Imports: []string{mod + "/gateway/y/util"},
			Deps: []string{mod + "/core/broker", mod + "/gateway/y/util"}},
		{ImportPath: mod + "/core/log/batch", Imports: []string{mod + "/internal/x"},
			Deps: []string{mod + "/internal/x"}},
		{ImportPath: mod + "/core/log/vfs", Deps: []string{"net"}},
		// Allowed: the same gateway, the gateway root, core from a gateway,
		// pure-data net packages from a codec.
		{ImportPath: mod + "/gateway/mqtt/session", Imports: []string{mod + "/gateway/mqtt/packet", mod + "/gateway", mod + "/core/broker"}},
		{ImportPath: mod + "/gateway/remoting/server", Imports: []string{"net"}, Deps: []string{"net"}},
		{ImportPath: mod + "/gateway/remoting/command", TestImports: []string{"net"}},
		{ImportPath: mod + "/gateway/x/frame", Imports: []string{mod + "/gateway/x/util"},
			Deps: []string{mod + "/gateway/x/util", "net/netip", "net/url"}},
		{ImportPath: mod + "/core/log/vfs", Imports: []string{mod + "/internal/invariants"},
			Deps: []string{mod + "/internal/invariants"}},
		{ImportPath: mod + "/cmd/conflux", Imports: []string{mod + "/gateway/mqtt", mod + "/gateway/amqp"}},
	}
	got := importViolations(mod, pkgs)
	want := []string{
		"core/broker imports gateway/mqtt",
		"core/txn imports gateway/amqp/frame",
		"gateway/mqtt imports gateway/amqp",
		"gateway/amqp imports gateway/remoting/command",
		"gateway/amqp/frame imports net",
		"gateway/mqtt/packet depends on net/http",
		"gateway/remoting/command imports core/log",
		"gateway/y/packet depends on core/broker",
		"core/log/batch imports internal/x",
		"core/log/vfs depends on net",
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.Contains(g, w) }) {
			t.Errorf("no violation reported containing %q; got:\n%s", w, strings.Join(got, "\n"))
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d violations, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
}

// leafSuffixes name the leaf packages: wire codecs and the storage bottom.
var leafSuffixes = []string{"/vfs", "/batch", "/command", "/frame", "/packet"}

// isNetPackage reports whether an import path is a networking package. The
// pure value packages net/netip and net/url do no I/O and are allowed.
func isNetPackage(p string) bool {
	if p == "net/netip" || p == "net/url" {
		return false
	}
	return p == "net" || strings.HasPrefix(p, "net/")
}

// importViolations returns one message per broken rule, naming the package
// and the import that breaks it. Paths in messages are relative to mod.
func importViolations(mod string, pkgs []pkg) []string {
	rel := func(p string) (string, bool) {
		if p == mod {
			return ".", true
		}
		r, ok := strings.CutPrefix(p, mod+"/")
		return r, ok
	}
	relOrFull := func(p string) string {
		if r, ok := rel(p); ok {
			return r
		}
		return p
	}
	under := func(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	// gatewayName returns X for gateway/X and gateway/X/..., else "".
	gatewayName := func(p string) string {
		r, ok := strings.CutPrefix(p, "gateway/")
		if !ok {
			return ""
		}
		name, _, _ := strings.Cut(r, "/")
		return name
	}

	var out []string
	for _, p := range pkgs {
		self, ok := rel(p.ImportPath)
		if !ok {
			continue
		}
		all := slices.Concat(p.Imports, p.TestImports, p.XTestImports)
		slices.Sort(all)
		all = slices.Compact(all)

		for _, imp := range all {
			dep, ok := rel(imp)
			if !ok {
				continue
			}
			// (a) core never reaches up into a gateway.
			if under(self, "core") && under(dep, "gateway") {
				out = append(out, fmt.Sprintf("%s imports %s: nothing under core/ may import gateway/ (docs/architecture.md: gateway/* -> core/broker -> core/{txn,raft,log})", self, dep))
			}
			// (b) gateways never import each other.
			if x, y := gatewayName(self), gatewayName(dep); x != "" && y != "" && x != y {
				out = append(out, fmt.Sprintf("%s imports %s: gateway/%s must not import gateway/%s; move shared code into core/ or gateway/ itself", self, dep, x, y))
			}
		}

		// (c) leaf packages.
		if !slices.ContainsFunc(leafSuffixes, func(s string) bool { return strings.HasSuffix(self, s) }) {
			continue
		}
		// Each rule names the direct imports that break it; only when there
		// are none does it name the transitive dependencies, in one message.
		leafRule := func(bad func(dep string) bool, why string) {
			var direct, indirect []string
			for _, dep := range p.Imports {
				if bad(dep) {
					direct = append(direct, dep)
				}
			}
			for _, dep := range p.Deps {
				if bad(dep) && !slices.Contains(p.Imports, dep) {
					indirect = append(indirect, dep)
				}
			}
			for _, dep := range direct {
				out = append(out, fmt.Sprintf("%s imports %s: %s", self, relOrFull(dep), why))
			}
			if len(direct) == 0 && len(indirect) > 0 {
				slices.Sort(indirect)
				names := make([]string, len(indirect))
				for i, dep := range indirect {
					names[i] = relOrFull(dep)
				}
				out = append(out, fmt.Sprintf("%s depends on %s (not imported directly; trace with `go list -deps`): %s", self, strings.Join(names, ", "), why))
			}
		}
		leafRule(isNetPackage, "leaf package "+self+" must not use the network")
		if self == "core/log/batch" {
			leafRule(func(dep string) bool { _, ok := rel(dep); return ok },
				"core/log/batch must import nothing from "+mod)
		}
		if under(self, "gateway") {
			leafRule(func(dep string) bool { d, ok := rel(dep); return ok && under(d, "core") },
				"wire codec "+self+" must not import core/; the gateway's session code does the mapping")
		}
	}
	return out
}

// TestNoFmtPrint bans fmt.Print, fmt.Println and fmt.Printf in library code:
// libraries log through an injected *slog.Logger. Programs (package main,
// e.g. cmd/ and //go:build ignore generators) and _test.go files may print.
func TestNoFmtPrint(t *testing.T) {
	root := moduleRoot(t)
	fset := token.NewFileSet()
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			name := d.Name()
			// The go command ignores testdata, and names starting with . or _.
			if rel != "." && (rel == "cmd" || rel == "bin" || rel == "data" || name == "testdata" || name == "vendor" ||
				strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		found, err := fmtPrintCalls(fset, rel, src)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		checked++
		for _, f := range found {
			t.Errorf("%s: %s outside package main; log through the injected *slog.Logger instead", f.pos, f.call)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("checked %d non-test Go files", checked)
}

// TestFmtPrintCheckFires checks that fmtPrintCalls finds plain, renamed and
// dot imports of fmt, and leaves package main and the other fmt functions
// alone.
func TestFmtPrintCheckFires(t *testing.T) {
	cases := []struct {
		src  string
		want []string
	}{
		{`package p; import "fmt"; func f() { fmt.Println("x"); fmt.Printf("%d", 1); _ = fmt.Sprintf("y") }`,
			[]string{"fmt.Println", "fmt.Printf"}},
		{`package p; import f "fmt"; var g = f.Print`, []string{"fmt.Print"}},
		{`package p; import . "fmt"; func f() { Println() }`, []string{"fmt.Println"}},
		{`package p; import "fmt"; func f() { g(fmt.Println).h() }`, []string{"fmt.Println"}},
		{`package p; import "fmt"; func f() { fmt.Fprintln(nil); _ = fmt.Errorf("e"); x.Println() }`, nil},
		{`package p; import . "fmt"; func f() { x.Println(); _ = Sprint() }`, nil},
		{`package p; import _ "fmt"; func f() { fmt.Println() }`, nil},
		{`package p; import ("fmt"; f "fmt"); func f() { fmt.Print(); f.Printf("") }`, []string{"fmt.Print", "fmt.Printf"}},
		{`package p; func f() { fmt.Println() }`, nil},
		{`package main; import "fmt"; func main() { fmt.Println("hi") }`, nil},
	}
	for _, c := range cases {
		found, err := fmtPrintCalls(token.NewFileSet(), "x.go", []byte(c.src))
		if err != nil {
			t.Fatalf("%s: %v", c.src, err)
		}
		var got []string
		for _, f := range found {
			got = append(got, f.call)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s:\n got %q\nwant %q", c.src, got, c.want)
		}
	}
}

type fmtUse struct {
	pos  token.Position
	call string
}

// fmtPrintCalls returns every reference to fmt.Print, fmt.Println or
// fmt.Printf in a non-main Go source file, under whatever name fmt is imported.
func fmtPrintCalls(fset *token.FileSet, name string, src []byte) ([]fmtUse, error) {
	f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	if f.Name.Name == "main" {
		return nil, nil
	}
	banned := map[string]bool{"Print": true, "Println": true, "Printf": true}
	names := map[string]bool{} // the names fmt is imported under; "." for a dot import
	for _, imp := range f.Imports {
		if imp.Path.Value != `"fmt"` {
			continue
		}
		if imp.Name == nil {
			names["fmt"] = true
		} else if imp.Name.Name != "_" {
			names[imp.Name.Name] = true
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	var out []fmtUse
	var visit func(n ast.Node) bool
	visit = func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.SelectorExpr:
			if id, ok := n.X.(*ast.Ident); ok && names[id.Name] && banned[n.Sel.Name] {
				out = append(out, fmtUse{fset.Position(n.Pos()), "fmt." + n.Sel.Name})
			}
			// Look inside X, but never at Sel: x.Println is not fmt's.
			ast.Inspect(n.X, visit)
			return false
		case *ast.CallExpr:
			if id, ok := n.Fun.(*ast.Ident); ok && names["."] && banned[id.Name] {
				out = append(out, fmtUse{fset.Position(n.Pos()), "fmt." + id.Name})
			}
		}
		return true
	}
	ast.Inspect(f, visit)
	return out, nil
}

// TestNoRaftV37 keeps go.etcd.io/raft/v3 (the v3.6+ module path) out of the
// build: linked next to go.etcd.io/etcd/raft/v3 (v3.5), both register the same
// raftpb protobuf types and the binary panics at init.
func TestNoRaftV37(t *testing.T) {
	root := moduleRoot(t)
	out := goCmd(t, root, "list", "-m", "all")
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) > 0 && fields[0] == "go.etcd.io/raft/v3" {
			t.Errorf("module graph contains %s: it conflicts with go.etcd.io/etcd/raft/v3 at init; find who requires it with `go mod why -m go.etcd.io/raft/v3`", strings.TrimSpace(line))
		}
	}
}

// moduleRoot walks up from the working directory to the directory holding go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		} else if !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod found above the working directory")
		}
		dir = parent
	}
}

// modulePath reads the module line of root/go.mod.
func modulePath(t *testing.T, root string) string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatal("go.mod has no module line")
	return ""
}

// listPackages runs `go list -json ./...` in root. -e keeps going past
// packages that do not compile: the import graph is still known, and the
// compile errors are other tests' business.
func listPackages(t *testing.T, root string) []pkg {
	t.Helper()
	out := goCmd(t, root, "list", "-e", "-json=ImportPath,Imports,Deps,TestImports,XTestImports", "./...")
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	// Sanity: the listing must at least contain this package, or every rule
	// would pass vacuously.
	if !slices.ContainsFunc(pkgs, func(p pkg) bool { return strings.HasSuffix(p.ImportPath, "/internal/lint") }) {
		t.Fatalf("go list ./... in %s did not list internal/lint; got %d packages", root, len(pkgs))
	}
	return pkgs
}

// goCmd runs the go command in dir and returns its stdout.
func goCmd(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go command not found on PATH: %v", err)
	}
	cmd := exec.Command(goBin, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}
