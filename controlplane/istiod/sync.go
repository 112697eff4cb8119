package istiod

import (
	"context"
	"errors"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func (w *Writer) syncGateways(ctx context.Context, want *desired) error {
	cur, err := w.cfg.Kube.CoreV1().Services(metav1.NamespaceAll).List(ctx, selector())
	if err != nil {
		return wrap("list", "gateway Services", "", "", err)
	}
	have := map[string]*corev1.Service{}
	var errs []error
	for i := range cur.Items {
		s := &cur.Items[i]
		k := key(s.Namespace, s.Name)
		if want.gateways[k] == nil {
			err := w.cfg.Kube.CoreV1().Services(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{})
			errs = append(errs, wrap("delete", "Service", s.Namespace, s.Name, err))
			if err == nil {
				w.log.Info("istiod: removed a remote gateway", "service", k)
			}
			continue
		}
		have[k] = s
	}
	for _, k := range slices.Sorted(maps.Keys(want.gateways)) {
		errs = append(errs, w.applyGateway(ctx, want.gateways[k], have[k]))
	}
	return errors.Join(errs...)
}

// applyGateway writes a gateway Service's spec, then its status: the
// status is the address istiod reads.
func (w *Writer) applyGateway(ctx context.Context, want, cur *corev1.Service) error {
	client := w.cfg.Kube.CoreV1().Services(want.Namespace)
	var err error
	switch {
	case cur == nil:
		cur, err = client.Create(ctx, want, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return w.foreign("Service", want.Namespace, want.Name)
		}
		if err != nil {
			return wrap("create", "Service", want.Namespace, want.Name, err)
		}
		w.log.Info("istiod: wrote a remote gateway", "service", want.Namespace+"/"+want.Name, "network", want.Labels[NetworkLabel])
	case !maps.Equal(cur.Labels, want.Labels) || !equality.Semantic.DeepEqual(cur.Spec.Ports, gatewayPorts(cur, want)):
		next := cur.DeepCopy()
		next.Labels = want.Labels
		next.Spec.Ports = want.Spec.Ports
		if cur, err = client.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
			return wrap("update", "Service", want.Namespace, want.Name, err)
		}
	}
	if equality.Semantic.DeepEqual(cur.Status.LoadBalancer, want.Status.LoadBalancer) {
		return nil
	}
	next := cur.DeepCopy()
	next.Status.LoadBalancer = want.Status.LoadBalancer
	_, err = client.UpdateStatus(ctx, next, metav1.UpdateOptions{})
	return wrap("update the status of", "Service", want.Namespace, want.Name, err)
}

// gatewayPorts is want's ports with the fields the API server defaults
// taken from cur, so that a defaulted field is not a change.
func gatewayPorts(cur, want *corev1.Service) []corev1.ServicePort {
	out := slices.Clone(want.Spec.Ports)
	for i := range out {
		if i < len(cur.Spec.Ports) {
			out[i].TargetPort = cur.Spec.Ports[i].TargetPort
			out[i].NodePort = cur.Spec.Ports[i].NodePort
		}
	}
	return out
}

func (w *Writer) syncServiceEntries(ctx context.Context, want *desired) error {
	client := w.cfg.Istio.NetworkingV1()
	cur, err := client.ServiceEntries(metav1.NamespaceAll).List(ctx, selector())
	if err != nil {
		return wrap("list", "ServiceEntries", "", "", err)
	}
	have := map[string]*networkingv1.ServiceEntry{}
	var errs []error
	for _, se := range cur.Items {
		k := key(se.Namespace, se.Name)
		if want.entries[k] == nil {
			err := client.ServiceEntries(se.Namespace).Delete(ctx, se.Name, metav1.DeleteOptions{})
			errs = append(errs, wrap("delete", "ServiceEntry", se.Namespace, se.Name, err))
			if err == nil {
				w.log.Info("istiod: removed an imported service", "serviceEntry", k)
			}
			continue
		}
		have[k] = se
	}
	for _, k := range slices.Sorted(maps.Keys(want.entries)) {
		se, old := want.entries[k], have[k]
		var err error
		switch {
		case old == nil:
			_, err = client.ServiceEntries(se.Namespace).Create(ctx, se, metav1.CreateOptions{})
			switch {
			case apierrors.IsAlreadyExists(err):
				err = w.foreign("ServiceEntry", se.Namespace, se.Name)
			case namespaceMissing(err):
				err = nil
			case err == nil:
				w.log.Info("istiod: wrote an imported service", "serviceEntry", k, "hosts", se.Spec.Hosts)
			}
			err = wrap("create", "ServiceEntry", se.Namespace, se.Name, err)
		case !proto.Equal(&old.Spec, &se.Spec) || !maps.Equal(old.Labels, se.Labels):
			next := old.DeepCopy()
			next.Labels = se.Labels
			se.Spec.DeepCopyInto(&next.Spec)
			_, err = client.ServiceEntries(se.Namespace).Update(ctx, next, metav1.UpdateOptions{})
			err = wrap("update", "ServiceEntry", se.Namespace, se.Name, err)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (w *Writer) syncWorkloadEntries(ctx context.Context, want *desired) error {
	client := w.cfg.Istio.NetworkingV1()
	cur, err := client.WorkloadEntries(metav1.NamespaceAll).List(ctx, selector())
	if err != nil {
		return wrap("list", "WorkloadEntries", "", "", err)
	}
	have := map[string]*networkingv1.WorkloadEntry{}
	var errs []error
	for _, we := range cur.Items {
		k := key(we.Namespace, we.Name)
		if want.workload[k] == nil {
			err := client.WorkloadEntries(we.Namespace).Delete(ctx, we.Name, metav1.DeleteOptions{})
			errs = append(errs, wrap("delete", "WorkloadEntry", we.Namespace, we.Name, err))
			continue
		}
		have[k] = we
	}
	for _, k := range slices.Sorted(maps.Keys(want.workload)) {
		we, old := want.workload[k], have[k]
		var err error
		switch {
		case old == nil:
			_, err = client.WorkloadEntries(we.Namespace).Create(ctx, we, metav1.CreateOptions{})
			switch {
			case apierrors.IsAlreadyExists(err):
				err = w.foreign("WorkloadEntry", we.Namespace, we.Name)
			case namespaceMissing(err):
				err = nil
			}
			err = wrap("create", "WorkloadEntry", we.Namespace, we.Name, err)
		case !proto.Equal(&old.Spec, &we.Spec) || !maps.Equal(old.Labels, we.Labels):
			next := old.DeepCopy()
			next.Labels = we.Labels
			we.Spec.DeepCopyInto(&next.Spec)
			_, err = client.WorkloadEntries(we.Namespace).Update(ctx, next, metav1.UpdateOptions{})
			err = wrap("update", "WorkloadEntry", we.Namespace, we.Name, err)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
