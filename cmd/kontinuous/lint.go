package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// lintCommand is `kontinuous lint [file|-]`: it checks a .pipeline.yml
// with the server's own parser, prints every problem with its stage and
// field, and exits 1 when there are problems, 2 when the file cannot be
// read, 0 when the spec is valid.
func lintCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
		fmt.Fprintln(stderr, "usage: kontinuous lint [file|-]   check a .pipeline.yml (default ./"+pipeline.SpecPath+"; - reads stdin); exit 1 on problems")
		return 0
	}
	if len(args) > 1 {
		fmt.Fprintf(stderr, "kontinuous lint: one file at a time (got %d arguments)\n", len(args))
		return 2
	}
	name := pipeline.SpecPath
	if len(args) == 1 {
		name = args[0]
	}
	var raw []byte
	var err error
	if name == "-" {
		raw, err = io.ReadAll(io.LimitReader(stdin, spec.MaxSpecBytes+1))
		name = "<stdin>"
	} else {
		raw, err = os.ReadFile(name)
	}
	if err != nil {
		fmt.Fprintf(stderr, "kontinuous lint: %v\n", err)
		return 2
	}
	d, problems := spec.Lint(raw)
	if len(problems) == 0 {
		fmt.Fprintf(stdout, "%s: valid (%d stages)\n", name, len(d.Spec.Template.Stages))
		return 0
	}
	for _, p := range problems {
		fmt.Fprintf(stdout, "%s: %s\n", name, p.Text)
	}
	noun := "problems"
	if len(problems) == 1 {
		noun = "problem"
	}
	fmt.Fprintf(stdout, "%s: %d %s\n", name, len(problems), noun)
	return 1
}

// buildVersion is the version --version prints: the -ldflags value, else
// the module version `go install ...@version` records, else the VCS
// revision `go build` records in a checkout.
func buildVersion() string {
	if version != "dev" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return version
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return version
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "dev-" + rev
}
