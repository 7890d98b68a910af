package main

import (
	"testing"

	"github.com/gtun/gtun/internal/clitest"
)

func TestCommandLine(t *testing.T) { clitest.CheckTree(t, daemon().Tree()) }
