// Command kube-apiserver is the upstream kube-apiserver, built from the module proxy so that
// tests can run a real apiserver without Docker or a release download.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
