// Package clitest checks a binary's command tree (pkg/cli) the way an
// operator meets it: help at every level, one spelling of flags, wrong
// input refused with exit code 2. The mains' tests run it on their trees.
package clitest

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/gtun/gtun/pkg/cli"
)

// execute runs args below root with buffers for stdio.
func execute(root *cli.Command, args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = cli.Execute(root, args, cli.IO{Stdin: strings.NewReader(""), Stdout: &o, Stderr: &e})
	return code, o.String(), e.String()
}

// CheckTree checks every command of root: a one-line description; --help,
// -h and `help` print its help to stdout and exit 0, naming its flags as
// cli.FlagName spells them and its subcommands; an unknown flag or
// command exits 2 with the usage on stderr and nothing on stdout.
func CheckTree(t *testing.T, root *cli.Command) {
	t.Helper()
	root.Walk(func(path string, c *cli.Command) {
		words := strings.Fields(path)[1:]
		if c.Short == "" || strings.Contains(c.Short, "\n") {
			t.Errorf("%s: the description must be one line, not %q", path, c.Short)
		}
		var helpOut string
		for _, args := range [][]string{
			append(append([]string{}, words...), "--help"),
			append(append([]string{}, words...), "-h"),
			append([]string{"help"}, words...),
		} {
			code, out, errOut := execute(root, args...)
			if code != cli.ExitOK || errOut != "" || !strings.HasPrefix(out, path+": "+c.Short+"\n") || !strings.Contains(out, "\nusage: "+path) {
				t.Errorf("%s %q: exit %d, stdout %q, stderr %q; want 0, its help on stdout", root.Name, args, code, out, errOut)
			}
			if helpOut != "" && out != helpOut {
				t.Errorf("%s %q prints another help than --help", root.Name, args)
			}
			helpOut = out
		}
		c.Flags().VisitAll(func(f *flag.Flag) {
			if !strings.Contains(helpOut, "\n  "+cli.FlagName(f.Name)) {
				t.Errorf("%s --help does not list %s:\n%s", path, cli.FlagName(f.Name), helpOut)
			}
			if len(f.Name) > 1 && strings.Contains(helpOut, " -"+f.Name) {
				t.Errorf("%s --help spells a word flag with one dash: -%s", path, f.Name)
			}
		})
		for _, sub := range c.Commands {
			if !strings.Contains(helpOut, "\n  "+sub.Name+" ") {
				t.Errorf("%s --help does not list its command %s", path, sub.Name)
			}
		}
		for _, args := range [][]string{
			append(append([]string{}, words...), "--no-such-flag"),
			append(append([]string{}, words...), "no-such-command"),
		} {
			if args[len(args)-1] == "no-such-command" && c.MaxArgs != 0 {
				continue // a positional argument there is the command's own
			}
			code, out, errOut := execute(root, args...)
			if code != cli.ExitUsage || out != "" || !strings.Contains(errOut, "--help") {
				t.Errorf("%s %q: exit %d, stdout %q, stderr %q; want 2, the way to help on stderr", root.Name, args, code, out, errOut)
			}
		}
	})
}

// CheckManPage checks that the man page source at path names every
// command below root and every flag of each, in bold as the page writes
// them: **peer add**, **--endpoint**.
func CheckManPage(t *testing.T, root *cli.Command, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	root.Walk(func(p string, c *cli.Command) {
		if words := strings.Fields(p)[1:]; len(words) > 0 && !strings.Contains(page, "**"+strings.Join(words, " ")+"**") {
			t.Errorf("%s does not name the command %s (as **%s**)", path, p, strings.Join(words, " "))
		}
		c.Flags().VisitAll(func(f *flag.Flag) {
			if !strings.Contains(page, "**"+cli.FlagName(f.Name)+"**") {
				t.Errorf("%s does not name %s's flag %s", path, p, cli.FlagName(f.Name))
			}
		})
	})
}
