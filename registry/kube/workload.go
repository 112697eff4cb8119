package kube

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	metav1alpha1 "istio.io/api/meta/v1alpha1"
	networkingpb "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AutoRegistrationGroupAnnotation names, on an auto-registered
// WorkloadEntry, the WorkloadGroup it came from, as Istio does.
const AutoRegistrationGroupAnnotation = "istio.io/autoRegistrationGroup"

// HealthCondition is the WorkloadEntry status condition that says whether
// a VM passes its readiness probe, as istiod writes it: the source counts
// an entry whose condition is False as unhealthy.
const HealthCondition = "Healthy"

// healthChecksAnnotation tells istiod to honour HealthCondition, as its
// own auto-registration does for a group with a probe.
const healthChecksAnnotation = "proxy.istio.io/health-checks-enabled"

// Workload is a VM that registers itself with its cluster.
type Workload struct {
	// Namespace and Group name its WorkloadGroup.
	Namespace string
	Group     string
	// Address is the VM's IP address.
	Address string
	// Locality and Network override the group's template when set.
	Locality string
	Network  string
	// Ports, when set, replace the template's ports: by service port name,
	// where the VM serves it (its sidecar's inbound listener).
	Ports map[string]uint32
}

// WorkloadEntryName is Istio's name for an auto-registered WorkloadEntry:
// <group>-<ip>, with the colons of an IPv6 address as dashes.
func WorkloadEntryName(group string, addr netip.Addr) string {
	return group + "-" + strings.ReplaceAll(addr.String(), ":", "-")
}

// RegisterWorkload creates or refreshes the WorkloadEntry of a VM from its
// WorkloadGroup's template, owned by the group so that deleting the group
// removes it. The source then serves the VM as an endpoint of every
// Service whose selector matches the template's labels.
func (s *Source) RegisterWorkload(ctx context.Context, w Workload) (*networkingv1.WorkloadEntry, error) {
	addr, err := netip.ParseAddr(w.Address)
	if err != nil {
		return nil, fmt.Errorf("kube: VM address %q is not an IP address", w.Address)
	}
	group, err := s.istio.NetworkingV1().WorkloadGroups(w.Namespace).Get(ctx, w.Group, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w %s/%s: create it first (the VM's cluster.env names it)", ErrNoWorkloadGroup, w.Namespace, w.Group)
	}
	if err != nil {
		return nil, fmt.Errorf("kube: WorkloadGroup %s/%s: %w", w.Namespace, w.Group, err)
	}
	spec := proto.CloneOf(group.Spec.GetTemplate())
	if spec == nil {
		spec = &networkingpb.WorkloadEntry{}
	}
	spec.Address = addr.String()
	spec.Network = cmp.Or(w.Network, spec.GetNetwork())
	spec.Locality = cmp.Or(w.Locality, spec.GetLocality())
	if len(w.Ports) > 0 {
		spec.Ports = maps.Clone(w.Ports)
	}
	lbls := maps.Clone(group.Spec.GetMetadata().GetLabels())
	if lbls == nil {
		lbls = map[string]string{}
	}
	lbls[ManagedByLabel] = ManagedBy
	annotations := maps.Clone(group.Spec.GetMetadata().GetAnnotations())
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[AutoRegistrationGroupAnnotation] = group.Name
	if group.Spec.GetProbe() != nil {
		annotations[healthChecksAnnotation] = "true"
	}
	controller := true
	want := &networkingv1.WorkloadEntry{
		ObjectMeta: metav1.ObjectMeta{
			Name: WorkloadEntryName(group.Name, addr), Namespace: w.Namespace,
			Labels: lbls, Annotations: annotations,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "networking.istio.io/v1", Kind: "WorkloadGroup", Name: group.Name, UID: group.UID, Controller: &controller,
			}},
		},
	}
	proto.Merge(&want.Spec, spec)
	client := s.istio.NetworkingV1().WorkloadEntries(w.Namespace)
	cur, err := client.Get(ctx, want.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		out, err := client.Create(ctx, want, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("kube: create WorkloadEntry %s/%s: %w", w.Namespace, want.Name, err)
		}
		s.log.Info("kube registry: registered a VM", "workloadEntry", w.Namespace+"/"+want.Name)
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kube: WorkloadEntry %s/%s: %w", w.Namespace, want.Name, err)
	}
	cur.Labels, cur.Annotations, cur.OwnerReferences = want.Labels, want.Annotations, want.OwnerReferences
	proto.Reset(&cur.Spec)
	proto.Merge(&cur.Spec, spec)
	out, err := client.Update(ctx, cur, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("kube: update WorkloadEntry %s/%s: %w", w.Namespace, want.Name, err)
	}
	return out, nil
}

// SetWorkloadHealth writes whether a registered VM passes its readiness
// probe into its WorkloadEntry's status, as the HealthCondition.
func (s *Source) SetWorkloadHealth(ctx context.Context, w Workload, healthy bool, message string) error {
	addr, err := netip.ParseAddr(w.Address)
	if err != nil {
		return fmt.Errorf("kube: VM address %q is not an IP address", w.Address)
	}
	name := WorkloadEntryName(w.Group, addr)
	client := s.istio.NetworkingV1().WorkloadEntries(w.Namespace)
	cur, err := client.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("kube: WorkloadEntry %s/%s: %w", w.Namespace, name, err)
	}
	status, reason := "True", "ProbeSucceeded"
	if !healthy {
		status, reason = "False", "ProbeFailed"
	}
	now := timestamppb.Now()
	cond := &metav1alpha1.IstioCondition{Type: HealthCondition, Status: status, Reason: reason, Message: message,
		LastProbeTime: now, LastTransitionTime: now}
	conds := cur.Status.GetConditions()
	i := slices.IndexFunc(conds, func(c *metav1alpha1.IstioCondition) bool { return c.GetType() == HealthCondition })
	switch {
	case i < 0:
		cur.Status.Conditions = append(conds, cond)
	case conds[i].GetStatus() == status:
		cond.LastTransitionTime = conds[i].GetLastTransitionTime()
		conds[i] = cond
	default:
		conds[i] = cond
	}
	if _, err := client.UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("kube: write the health of WorkloadEntry %s/%s: %w", w.Namespace, name, err)
	}
	return nil
}

// RegisteredWorkloads lists the WorkloadEntries that RegisterWorkload
// wrote, in every namespace: those of an earlier process too.
func (s *Source) RegisteredWorkloads(ctx context.Context) ([]Workload, error) {
	list, err := s.istio.NetworkingV1().WorkloadEntries(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		LabelSelector: ManagedByLabel + "=" + ManagedBy,
	})
	if err != nil {
		return nil, fmt.Errorf("kube: list the VMs' WorkloadEntries: %w", err)
	}
	var out []Workload
	for _, we := range list.Items {
		group := we.Annotations[AutoRegistrationGroupAnnotation]
		addr, err := netip.ParseAddr(we.Spec.GetAddress())
		if group == "" || err != nil || we.Name != WorkloadEntryName(group, addr) {
			continue // not as RegisterWorkload writes them
		}
		out = append(out, Workload{
			Namespace: we.Namespace, Group: group, Address: addr.String(),
			Network: we.Spec.GetNetwork(), Locality: we.Spec.GetLocality(), Ports: maps.Clone(we.Spec.GetPorts()),
		})
	}
	return out, nil
}

// UnregisterWorkload deletes a VM's auto-registered WorkloadEntry; a
// missing one is not an error.
func (s *Source) UnregisterWorkload(ctx context.Context, w Workload) error {
	addr, err := netip.ParseAddr(w.Address)
	if err != nil {
		return fmt.Errorf("kube: VM address %q is not an IP address", w.Address)
	}
	name := WorkloadEntryName(w.Group, addr)
	err = s.istio.NetworkingV1().WorkloadEntries(w.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("kube: delete WorkloadEntry %s/%s: %w", w.Namespace, name, err)
	}
	return nil
}
