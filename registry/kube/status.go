package kube

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/federate/federate/registry"
)

// writeExportStatus sets the Valid, Ready and Conflict conditions of every
// ServiceExport whose conditions differ from what the source decided.
func (s *Source) writeExportStatus(ctx context.Context, l *listers, verdicts map[string]verdict, _ []*registry.Service, remote []RemoteCluster) error {
	exports, _ := l.exports.List(labels.Everything())
	var errs []error
	for _, exp := range exports {
		v, ok := verdicts[exp.Namespace+"/"+exp.Name]
		if !ok {
			continue // created after build; the next round has it
		}
		want := exp.DeepCopy()
		conds := &want.Status.Conditions
		gen := exp.Generation
		set := func(t mcsv1beta1.ServiceExportConditionType, st metav1.ConditionStatus, reason mcsv1beta1.ServiceExportConditionReason, msg string) bool {
			c := mcsv1beta1.NewServiceExportCondition(t, st, reason, msg)
			c.ObservedGeneration = gen
			return meta.SetStatusCondition(conds, c)
		}
		changed := false
		if v.valid {
			changed = set(mcsv1beta1.ServiceExportConditionValid, metav1.ConditionTrue, v.reason, v.message) || changed
			changed = set(mcsv1beta1.ServiceExportConditionReady, metav1.ConditionTrue, mcsv1beta1.ServiceExportReasonExported,
				"published to the federation as "+v.service.GetHostname()) || changed
			if msg := portConflict(s.cfg.Cluster, v.service, remote); msg != "" {
				changed = set(mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionTrue, mcsv1beta1.ServiceExportReasonPortConflict, msg) || changed
			} else {
				changed = set(mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionFalse, mcsv1beta1.ServiceExportReasonNoConflicts,
					"every cluster that exports this service agrees on its ports") || changed
			}
		} else {
			changed = set(mcsv1beta1.ServiceExportConditionValid, metav1.ConditionFalse, v.reason, v.message) || changed
			changed = set(mcsv1beta1.ServiceExportConditionReady, metav1.ConditionFalse, mcsv1beta1.ServiceExportReasonFailed,
				"not exported: "+v.message) || changed
			changed = meta.RemoveStatusCondition(conds, string(mcsv1beta1.ServiceExportConditionConflict)) || changed
		}
		if !changed {
			continue
		}
		_, err := s.mcs.MulticlusterV1beta1().ServiceExports(exp.Namespace).UpdateStatus(ctx, want, metav1.UpdateOptions{})
		if err != nil {
			errs = append(errs, fmt.Errorf("status of ServiceExport %s/%s: %w", exp.Namespace, exp.Name, err))
		}
	}
	return errors.Join(errs...)
}

// portConflict describes how other clusters' ports for the same service
// disagree with ours, or returns "".
func portConflict(cluster string, svc *registry.Service, remote []RemoteCluster) string {
	ours := formatPorts(svc.GetPorts())
	var diffs []string
	for _, r := range remote {
		for _, theirs := range r.Services {
			if theirs.GetHostname() != svc.GetHostname() {
				continue
			}
			if other := formatPorts(theirs.GetPorts()); other != ours {
				diffs = append(diffs, fmt.Sprintf("cluster %q has %s", r.Name, other))
			}
		}
	}
	if len(diffs) == 0 {
		return ""
	}
	return fmt.Sprintf("ports differ across clusters: cluster %q has %s, %s; the ServiceImport lists the ports of cluster %q (the first by name): make every cluster's Service ports the same",
		cluster, ours, strings.Join(diffs, ", "), winner(cluster, svc.GetHostname(), remote))
}

// formatPorts renders ports as "[http 8080/HTTP, grpc 9090/GRPC]", sorted
// by number, for comparison and messages.
func formatPorts(ports []*registry.Port) string {
	parts := make([]string, len(ports))
	for i, p := range ports {
		parts[i] = fmt.Sprintf("%s %d/%s", cmpName(p.GetName()), p.GetNumber(), p.GetProtocol())
	}
	slices.Sort(parts)
	return "[" + strings.Join(parts, ", ") + "]"
}

func cmpName(n string) string {
	if n == "" {
		return "(unnamed)"
	}
	return n
}
