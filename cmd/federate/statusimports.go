package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/federate/federate/hub/hubpb"
)

// importJSON is one service a cluster imports, in 'federate status -o json'.
type importJSON struct {
	Host  string   `json:"host"`
	State string   `json:"state"`
	From  []string `json:"from,omitempty"`
}

func importsView(imps []*hubpb.Import) []importJSON {
	var out []importJSON
	for _, imp := range imps {
		out = append(out, importJSON{Host: imp.GetHost(), State: imp.GetState(), From: imp.GetFrom()})
	}
	return out
}

// writeImportsTable lists, under the clusters, the imports of each cluster
// that imports some services only; a cluster importing every service is
// not listed.
func writeImportsTable(w io.Writer, clusters []*hubpb.ClusterStatus) {
	var scoped []*hubpb.ClusterStatus
	for _, c := range clusters {
		if !c.GetImportsAll() && len(c.GetImports()) > 0 {
			scoped = append(scoped, c)
		}
	}
	if len(scoped) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tIMPORTS\tSTATE\tFROM")
	for _, c := range scoped {
		for _, imp := range c.GetImports() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.GetName(), imp.GetHost(), imp.GetState(), dash(strings.Join(imp.GetFrom(), ",")))
		}
	}
	tw.Flush()
}
