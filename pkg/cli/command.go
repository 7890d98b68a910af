package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
)

// Command is one node of a binary's command tree: the binary itself at the
// root, its commands and their subcommands below. Every node answers
// --help, -h and `help` by printing its usage to stdout (exit 0); a wrong
// command, flag or argument count prints the usage to stderr (exit 2).
type Command struct {
	Name    string
	Aliases []string // other names it answers to ("ls" for "list"), not listed
	Short   string   // one line, for the parent's list of commands
	Long    string   // paragraphs after the usage line, in --help only
	// Args names the positional arguments in the usage line ("NAME");
	// MinArgs and MaxArgs bound their count (both 0: none; MaxArgs -1: any).
	Args             string
	MinArgs, MaxArgs int
	// Synopsis replaces the flags part of the usage line when the flags
	// alone do not tell how they go together ("[-c FILE | --socket PATH]").
	Synopsis string
	// Setup declares the command's flags on fs and returns what runs with
	// them parsed. Nil for a command that only groups subcommands.
	Setup    func(fs *flag.FlagSet) func(e *Env) int
	Commands []*Command
}

// Env is what a command runs with.
type Env struct {
	Args           []string // positional arguments, flags removed
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	path           string // "gtund peer add"
	cmd            *Command
}

// Path is the command as typed, for messages: "gtund peer add".
func (e *Env) Path() string { return e.path }

// Usagef reports the caller's mistake with the command's usage line and
// returns the exit code for it.
func (e *Env) Usagef(format string, args ...any) int {
	fmt.Fprintf(e.Stderr, "%s: %s\n", e.path, fmt.Sprintf(format, args...))
	fmt.Fprintf(e.Stderr, "usage: %s\nRun '%s --help' for more.\n", synopsis(e.path, e.cmd), e.path)
	return ExitUsage
}

// Errorf reports a failure and returns ExitRuntime.
func (e *Env) Errorf(format string, args ...any) int {
	fmt.Fprintf(e.Stderr, "%s: %s\n", e.path, fmt.Sprintf(format, args...))
	return ExitRuntime
}

// IO is where Execute reads and writes: the process's stdio in the mains,
// buffers in tests.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Execute runs the command that args name below root and returns the exit
// code.
func Execute(root *Command, args []string, stdio IO) int {
	cmd, path := root, root.Name
	for {
		if len(args) > 0 && args[0] == "help" && cmd.find("help") == nil {
			return help(cmd, path, args[1:], stdio)
		}
		if len(args) == 0 || len(cmd.Commands) == 0 {
			break
		}
		sub := cmd.find(args[0])
		if sub == nil {
			break
		}
		cmd, path, args = sub, path+" "+sub.Name, args[1:]
	}
	fs := flag.NewFlagSet(path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var run func(*Env) int
	if cmd.Setup != nil {
		run = cmd.Setup(fs)
	}
	if run == nil { // a group: its subcommand is missing or unknown
		if len(args) > 0 && isHelpFlag(args[0]) {
			cmd.printHelp(stdio.Stdout, path)
			return ExitOK
		}
		if len(args) == 0 {
			fmt.Fprintf(stdio.Stderr, "%s: which command? (%s)\n", path, strings.Join(cmd.names(), ", "))
		} else {
			fmt.Fprintf(stdio.Stderr, "%s: unknown command %q (%s)\n", path, args[0], strings.Join(cmd.names(), ", "))
		}
		fmt.Fprintf(stdio.Stderr, "Run '%s --help' for more.\n", path)
		return ExitUsage
	}
	pos, err := parseInterspersed(fs, args)
	env := &Env{Args: pos, Stdin: stdio.Stdin, Stdout: stdio.Stdout, Stderr: stdio.Stderr, path: path, cmd: cmd}
	switch {
	case errors.Is(err, flag.ErrHelp):
		cmd.printHelp(stdio.Stdout, path)
		return ExitOK
	case err != nil:
		return env.Usagef("%s", flagError(err))
	case len(pos) > 0 && len(cmd.Commands) > 0 && cmd.MaxArgs == 0:
		fmt.Fprintf(stdio.Stderr, "%s: unknown command %q (%s)\nRun '%s --help' for more.\n", path, pos[0], strings.Join(cmd.names(), ", "), path)
		return ExitUsage
	case len(pos) < cmd.MinArgs:
		return env.Usagef("%s is missing", cmd.Args)
	case cmd.MaxArgs >= 0 && len(pos) > cmd.MaxArgs:
		return env.Usagef("unexpected argument %q", pos[cmd.MaxArgs])
	}
	return run(env)
}

// help answers `help [COMMAND...]` at cmd.
func help(cmd *Command, path string, names []string, stdio IO) int {
	for _, n := range names {
		sub := cmd.find(n)
		if sub == nil {
			fmt.Fprintf(stdio.Stderr, "%s help: unknown command %q (%s)\n", path, n, strings.Join(cmd.names(), ", "))
			return ExitUsage
		}
		cmd, path = sub, path+" "+sub.Name
	}
	cmd.printHelp(stdio.Stdout, path)
	return ExitOK
}

func isHelpFlag(s string) bool { return s == "-h" || s == "--help" || s == "-help" }

func (c *Command) find(name string) *Command {
	for _, s := range c.Commands {
		if s.Name == name || slices.Contains(s.Aliases, name) {
			return s
		}
	}
	return nil
}

func (c *Command) names() []string {
	var out []string
	for _, s := range c.Commands {
		out = append(out, s.Name)
	}
	return out
}

// Walk calls f for c and every command below it, with its path from c.
func (c *Command) Walk(f func(path string, c *Command)) { c.walk(c.Name, f) }

func (c *Command) walk(path string, f func(string, *Command)) {
	f(path, c)
	for _, s := range c.Commands {
		s.walk(path+" "+s.Name, f)
	}
}

// Flags returns the command's flags, declared on a fresh set (for help
// text and for tests).
func (c *Command) Flags() *flag.FlagSet {
	fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	if c.Setup != nil {
		c.Setup(fs)
	}
	return fs
}

// parseInterspersed parses flags before, between and after positional
// arguments (operators type "add NAME --flag" as often as "add --flag
// NAME"); "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag stops at "--" (consumed) or at the first non-flag.
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

var flagInMsg = regexp.MustCompile(`(: |flag |for )-([A-Za-z0-9][A-Za-z0-9_-]*)`)

// flagError is a flag parse error in the help's spelling of flags.
func flagError(err error) string {
	msg := strings.Replace(err.Error(), "flag provided but not defined", "unknown flag", 1)
	return flagInMsg.ReplaceAllStringFunc(msg, func(m string) string {
		sub := flagInMsg.FindStringSubmatch(m)
		return sub[1] + FlagName(sub[2])
	})
}

// FlagName is how help and docs spell a flag: one dash for a single
// letter (-c), two for a word (--json). The parser takes either.
func FlagName(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// synopsis is the usage line: the path, the flags and the arguments.
func synopsis(path string, c *Command) string {
	parts := []string{path}
	if c.Synopsis != "" {
		parts = append(parts, c.Synopsis)
	} else {
		var flags []string
		c.Flags().VisitAll(func(f *flag.Flag) {
			name, _ := flag.UnquoteUsage(f)
			if isBool(f) {
				name = ""
			}
			flags = append(flags, "["+strings.TrimSpace(FlagName(f.Name)+" "+name)+"]")
		})
		if len(flags) > 4 {
			flags = []string{"[flags]"}
		}
		parts = append(parts, flags...)
	}
	if c.Args != "" {
		parts = append(parts, c.Args)
	}
	if c.Setup == nil && len(c.Commands) > 0 {
		parts = append(parts, "COMMAND")
	}
	return strings.Join(parts, " ")
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// printHelp writes the command's help: what it does, its usage line, its
// long text, its commands and its flags.
func (c *Command) printHelp(w io.Writer, path string) {
	if c.Short != "" {
		fmt.Fprintf(w, "%s: %s\n\n", path, c.Short)
	}
	fmt.Fprintf(w, "usage: %s\n", synopsis(path, c))
	if c.Setup != nil && len(c.Commands) > 0 {
		fmt.Fprintf(w, "       %s COMMAND [ARGS]\n", path)
	}
	if c.Long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.Long))
	}
	if len(c.Commands) > 0 {
		fmt.Fprintf(w, "\ncommands:\n")
		tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
		for _, s := range c.Commands {
			fmt.Fprintf(tw, "  %s\t%s\n", s.Name, s.Short)
		}
		fmt.Fprintf(tw, "  help\tshow the help of a command: %s help COMMAND\n", path)
		tw.Flush()
	}
	var flags strings.Builder
	c.Flags().VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		if isBool(f) {
			name = ""
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			usage += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(&flags, "  %s\n%s", strings.TrimSpace(FlagName(f.Name)+" "+name), wrap(usage, "      ", 78))
	})
	if flags.Len() > 0 {
		fmt.Fprintf(w, "\nflags:\n%s", flags.String())
	}
	if len(c.Commands) > 0 {
		fmt.Fprintf(w, "\nRun '%s COMMAND --help' for a command's flags.\n", path)
	}
}

// wrap breaks s into lines of at most width columns, each with indent.
func wrap(s, indent string, width int) string {
	var b strings.Builder
	line := indent
	for _, word := range strings.Fields(s) {
		if len(line) > len(indent) && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += word
	}
	if len(line) > len(indent) {
		b.WriteString(line + "\n")
	}
	return b.String()
}
