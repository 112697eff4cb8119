package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/registry"
)

func statusCommand() *cobra.Command {
	var server string
	var client clientFlags
	var out cli.Output
	cmd := command("status [--hub ADDR | --server ADDR] [-o table|json|yaml]", "show every cluster of the federation",
		"Shows every cluster of the federation: its state (alive, suspect, stale or\n"+
			"dead), slice version, services and endpoints, propagation lag, trust domain\n"+
			"and bundle sequence, as the hub, or one control plane, sees it; and, for a\n"+
			"cluster that imports some services only, each import and the clusters that\n"+
			"export it (pending while none does).",
		func(c *cobra.Command) error { return runStatus(c, server, &client, &out) })
	cmd.Flags().StringVar(&server, "server", "", "ask this control plane instead of the hub")
	client.register(cmd, "hub address")
	out.Register(cmd)
	cmd.Example = "  # the hub's view, with the hub's admin credential\n" +
		"  federate status --hub 203.0.113.10:15012 --credential /var/lib/federate-hub/admin.pem\n\n" +
		"  # one control plane's view, with its locality policy warnings, as JSON\n" +
		"  federate status --server 127.0.0.1:15013 --credential /var/lib/federate/credential.pem -o json"
	return cmd
}

func runStatus(c *cobra.Command, server string, client *clientFlags, out *cli.Output) error {
	if err := out.Check(); err != nil {
		return err
	}
	addr, srv := client.hubAddr(), hubAt(client.hubAddr())
	if server != "" {
		addr, srv = server, serverAt("control plane", server)
	}
	if addr == "" {
		return cli.Usagef("pass --hub ADDR or --server ADDR (or set FEDERATE_HUB)")
	}
	if server != "" {
		if err := checkAddr("--server", server, exampleControlPlane); err != nil {
			return err
		}
	} else if err := client.checkHub(); err != nil {
		return err
	}
	conn, err := client.connectTo(c.Context(), srv)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(c.Context(), callTimeout)
	defer cancel()
	st, err := hubpb.NewRegistryClient(conn).Status(ctx, &hubpb.StatusRequest{})
	if err != nil {
		return srv.callError("status from "+addr, err)
	}
	return printStatus(c.OutOrStdout(), out, st)
}

// printStatus writes st as -o asks: the table, or statusJSON.
func printStatus(w io.Writer, out *cli.Output, st *hubpb.StatusResponse) error {
	return out.Print(w, statusView(st), func(w io.Writer) error {
		writeStatusTable(w, st, time.Now())
		return nil
	})
}

// statusJSON is the stable shape of 'federate status -o json' (and -o
// yaml, with the same field names).
type statusJSON struct {
	Mesh     string              `json:"mesh"`
	Clusters []clusterStatusJSON `json:"clusters"`
	Timers   map[string]string   `json:"timers"`
	// Warnings about locality policies and failure domains (from a
	// control plane only).
	PolicyWarnings []policyWarningJSON `json:"policyWarnings,omitempty"`
	// The hub's store health (from the hub only).
	Store *storeJSON `json:"store,omitempty"`
	// Imported trust domains outside the federation.
	ExternalTrustDomains []externalJSON `json:"externalTrustDomains,omitempty"`
}

// externalJSON is an imported trust domain: the hub fetches it from url, a
// control plane holds what the hub relayed (no url, no next refresh).
type externalJSON struct {
	TrustDomain    string `json:"trustDomain"`
	URL            string `json:"url,omitempty"`
	BundleSequence uint64 `json:"bundleSequence"`
	Roots          uint32 `json:"roots"`
	LastRefresh    string `json:"lastRefresh,omitempty"`
	NextRefresh    string `json:"nextRefresh,omitempty"`
	Error          string `json:"error,omitempty"`
}

type storeJSON struct {
	WriteFailures uint64 `json:"writeFailures"`
	Error         string `json:"error,omitempty"`
	FailingSince  string `json:"failingSince,omitempty"`
}

type policyWarningJSON struct {
	Rule    string `json:"rule,omitempty"`
	Host    string `json:"host,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

type clusterStatusJSON struct {
	Name               string `json:"name"`
	Network            string `json:"network"`
	Locality           string `json:"locality"`
	State              string `json:"state"`
	SliceVersion       string `json:"sliceVersion"`
	Services           int32  `json:"services"`
	Endpoints          int32  `json:"endpoints"`
	UnhealthyEndpoints int32  `json:"unhealthyEndpoints"`
	LastSeen           string `json:"lastSeen"`
	LagMs              int64  `json:"lagMs"`
	TrustDomain        string `json:"trustDomain"`
	BundleSequence     uint64 `json:"bundleSequence"`
	Gateway            string `json:"gateway"`
	RootExpiry         string `json:"rootExpiry,omitempty"`
	RotationPhase      string `json:"rotationPhase,omitempty"`
	// What the cluster imports, when the server knows: every service, or
	// the services listed.
	ImportsAll bool         `json:"importsAll,omitempty"`
	Imports    []importJSON `json:"imports,omitempty"`
}

func writeStatusJSON(w io.Writer, st *hubpb.StatusResponse) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(statusView(st))
}

// statusView is st in the shape of statusJSON.
func statusView(st *hubpb.StatusResponse) statusJSON {
	out := statusJSON{Mesh: st.GetMesh(), Clusters: []clusterStatusJSON{}, Timers: map[string]string{
		"staleAfter":  (time.Duration(st.GetStaleAfterMs()) * time.Millisecond).String(),
		"deadAfter":   (time.Duration(st.GetDeadAfterMs()) * time.Millisecond).String(),
		"expireAfter": (time.Duration(st.GetExpireAfterMs()) * time.Millisecond).String(),
	}}
	for _, c := range st.GetClusters() {
		out.Clusters = append(out.Clusters, clusterStatusJSON{
			Name: c.GetName(), Network: c.GetNetwork(), Locality: c.GetLocality(), State: c.GetState(),
			SliceVersion: registry.FormatVersion(c.GetSliceVersion()), Services: c.GetServices(), Endpoints: c.GetEndpoints(),
			UnhealthyEndpoints: c.GetUnhealthyEndpoints(), LastSeen: time.UnixMilli(c.GetLastSeen()).UTC().Format(time.RFC3339Nano),
			LagMs: c.GetLagMs(), TrustDomain: c.GetTrustDomain(), BundleSequence: c.GetBundleSequence(), Gateway: c.GetGateway(),
			RootExpiry: formatUnix(c.GetRootExpiry()), RotationPhase: c.GetRotationPhase(),
			ImportsAll: c.GetImportsAll(), Imports: importsView(c.GetImports()),
		})
	}
	for _, pw := range st.GetPolicyWarnings() {
		out.PolicyWarnings = append(out.PolicyWarnings, policyWarningJSON{Rule: pw.GetRule(), Host: pw.GetHost(), Field: pw.GetField(), Message: pw.GetMessage()})
	}
	if s := st.GetStore(); s != nil {
		out.Store = &storeJSON{WriteFailures: s.GetWriteFailures(), Error: s.GetError(), FailingSince: formatUnixTime(s.GetFailingSince())}
	}
	for _, e := range st.GetExternal() {
		out.ExternalTrustDomains = append(out.ExternalTrustDomains, externalJSON{
			TrustDomain: e.GetTrustDomain(), URL: e.GetUrl(), BundleSequence: e.GetBundleSequence(), Roots: e.GetRoots(),
			LastRefresh: formatUnixTime(e.GetLastRefresh()), NextRefresh: formatUnixTime(e.GetNextRefresh()), Error: e.GetError(),
		})
	}
	return out
}

func writeStatusTable(w io.Writer, st *hubpb.StatusResponse, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tSTATE\tNETWORK\tLOCALITY\tVERSION\tSERVICES\tENDPOINTS\tUNHEALTHY\tLAG\tLAST SEEN\tTRUST DOMAIN\tBUNDLE\tROOT EXPIRY\tROTATION\tGATEWAY")
	for _, c := range st.GetClusters() {
		seen := now.Sub(time.UnixMilli(c.GetLastSeen())).Round(time.Second)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%dms\t%s ago\t%s\t%d\t%s\t%s\t%s\n",
			c.GetName(), c.GetState(), dash(c.GetNetwork()), dash(c.GetLocality()), registry.FormatVersion(c.GetSliceVersion()),
			c.GetServices(), c.GetEndpoints(), c.GetUnhealthyEndpoints(), c.GetLagMs(), seen, dash(c.GetTrustDomain()), c.GetBundleSequence(),
			dash(formatUnix(c.GetRootExpiry())), dash(c.GetRotationPhase()), dash(c.GetGateway()))
	}
	tw.Flush()
	fmt.Fprintf(w, "mesh %s: %d clusters; stale after %s, dead after %s, expired after %s\n", st.GetMesh(), len(st.GetClusters()),
		time.Duration(st.GetStaleAfterMs())*time.Millisecond, time.Duration(st.GetDeadAfterMs())*time.Millisecond, time.Duration(st.GetExpireAfterMs())*time.Millisecond)
	writeImportsTable(w, st.GetClusters())
	writeExternalTable(w, st.GetExternal(), now)
	for _, pw := range st.GetPolicyWarnings() {
		fmt.Fprintf(w, "warning: %s\n", policyWarning(pw))
	}
	if s := st.GetStore(); s.GetError() != "" {
		fmt.Fprintf(w, "warning: the hub's store writes fail since %s (%d failures): %s\n"+
			"  the hub refuses changes (publishes, tokens, removals) until a write succeeds: free space on its disk\n",
			formatUnixTime(s.GetFailingSince()), s.GetWriteFailures(), s.GetError())
	}
}

// writeExternalTable lists the imported trust domains under the clusters.
func writeExternalTable(w io.Writer, exts []*hubpb.ExternalTrustDomain, now time.Time) {
	if len(exts) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMPORTED TRUST DOMAIN\tBUNDLE\tROOTS\tLAST REFRESH\tNEXT REFRESH\tURL\tERROR")
	for _, e := range exts {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n", e.GetTrustDomain(), e.GetBundleSequence(), e.GetRoots(),
			relativeTime(e.GetLastRefresh(), now), relativeTime(e.GetNextRefresh(), now), dash(e.GetUrl()), dash(e.GetError()))
	}
	tw.Flush()
}

// relativeTime reads "12s ago" or "in 4m48s"; "-" for never.
func relativeTime(sec int64, now time.Time) string {
	if sec == 0 {
		return "-"
	}
	d := time.Unix(sec, 0).Sub(now).Round(time.Second)
	if d < 0 {
		return (-d).String() + " ago"
	}
	return "in " + d.String()
}

func formatUnixTime(sec int64) string {
	if sec == 0 {
		return ""
	}
	return time.Unix(sec, 0).UTC().Format(time.RFC3339)
}

// policyWarning reads "DestinationRule ns/name (host): field: message".
func policyWarning(pw *hubpb.PolicyWarning) string {
	var b strings.Builder
	if pw.GetRule() != "" {
		b.WriteString("DestinationRule " + pw.GetRule() + " ")
	}
	if pw.GetHost() != "" {
		b.WriteString("(" + pw.GetHost() + ") ")
	}
	s := strings.TrimSuffix(b.String(), " ")
	if s != "" {
		s += ": "
	}
	if pw.GetField() != "" {
		s += pw.GetField() + ": "
	}
	return s + pw.GetMessage()
}

func formatUnix(sec int64) string {
	if sec == 0 {
		return ""
	}
	return time.Unix(sec, 0).UTC().Format("2006-01-02")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
