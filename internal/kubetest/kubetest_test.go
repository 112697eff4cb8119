package kubetest

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Two apiservers on one etcd are separate clusters; a restarted one keeps
// its objects; a ServiceAccount token authenticates as that account, which
// RBAC then limits.
func TestIntegrationHarness(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := Start(t, "one", "two")
	one, two := cs[0], cs[1]
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "marker", Namespace: "default"}, Data: map[string]string{"k": "v"}}
	if _, err := one.Client.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := two.Client.CoreV1().ConfigMaps("default").Get(ctx, "marker", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("cluster two sees cluster one's ConfigMap: %v", err)
	}

	one.Stop()
	if _, err := one.Client.CoreV1().ConfigMaps("default").Get(ctx, "marker", metav1.GetOptions{}); err == nil {
		t.Fatal("a stopped apiserver answered")
	}
	one.Restart()
	got, err := one.Client.CoreV1().ConfigMaps("default").Get(ctx, "marker", metav1.GetOptions{})
	if err != nil || got.Data["k"] != "v" {
		t.Fatalf("after a restart: %v, %v", got, err)
	}

	token := two.ServiceAccountToken(t, "team", "reader")
	sa, err := kubernetes.NewForConfig(two.ConfigWithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	_, err = sa.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("a ServiceAccount without roles listed ConfigMaps: %v", err)
	}
	two.InstallCRDs(t)
}

// HostIP is an address that EndpointSlices accept and that local
// processes can listen on, even in a network namespace with only
// loopback (where the test must run as root).
func TestHostIP(t *testing.T) {
	ip := HostIP(t)
	t.Logf("HostIP: %s", ip)
	if a := net.ParseIP(ip); a == nil || a.To4() == nil || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() {
		t.Fatalf("HostIP = %q", ip)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			_, _ = c.Write([]byte("hello"))
			c.Close()
		}
	}()
	c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if b, err := io.ReadAll(c); err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v", b, err)
	}
}
