package main

import (
	"testing"

	"github.com/gtun/gtun/internal/clitest"
)

func TestCommandLine(t *testing.T) { clitest.CheckTree(t, daemon().Tree()) }

func TestManPageNamesEveryCommand(t *testing.T) {
	clitest.CheckManPage(t, daemon().Tree(), "../docs/man/gtun.8.md")
}
