package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/federate/federate/hub/hubpb"
)

// completeTimeout bounds the hub's answer to a shell completion, so that
// a tab press never hangs on an unreachable hub.
const completeTimeout = 2 * time.Second

// completeClusters completes a cluster name with the clusters the hub
// knows, when --hub (or $FEDERATE_HUB) and a credential are at hand; else
// with nothing.
func (c *clientFlags) completeClusters(cmd *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if c.hubAddr() == "" {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), completeTimeout)
	defer cancel()
	conn, err := c.connect(ctx, c.hubAddr())
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer conn.Close()
	st, err := hubpb.NewRegistryClient(conn).Status(ctx, &hubpb.StatusRequest{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []cobra.Completion
	for _, cl := range st.GetClusters() {
		names = append(names, cobra.CompletionWithDesc(cl.GetName(), cl.GetState()))
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
