//go:build !unix

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// labCommand says where the lab runs: its processes and signals are Unix's.
func labCommand() *cobra.Command {
	return &cobra.Command{
		Use: "lab", Short: "run the embedded lab (Linux only)", Args: cobra.ArbitraryArgs,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("the embedded lab runs on Linux: run 'make lab' there; the other commands work here")
		},
	}
}
