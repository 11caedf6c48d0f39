// Command controlplane is the local Kubernetes control plane used by
// `hack/testenv`: the upstream kube-apiserver and an embedded etcd, built from
// the pinned upstream Go modules (see go.mod) into one binary.
//
//	controlplane etcd [etcd flags]
//	controlplane kube-apiserver [kube-apiserver flags]
//	controlplane kubectl [kubectl args]
//
// All three come from the same module graph that Kubernetes itself pins, so
// the etcd server is the one this kube-apiserver release is tested against,
// and kubectl is the matching client (tests never depend on whatever kubectl
// a machine happens to have).
package main

import (
	"fmt"
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: controlplane etcd|kube-apiserver|kubectl [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "etcd":
		// etcdmain reads os.Args[1:] as its own flags.
		etcdmain.Main(append([]string{"etcd"}, os.Args[2:]...))
	case "kube-apiserver":
		cmd := app.NewAPIServerCommand()
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	case "kubectl":
		cmd := kubectl.NewDefaultKubectlCommand()
		cmd.SetArgs(os.Args[2:])
		if err := cli.RunNoErrOutput(cmd); err != nil {
			// kubectl's own error printing and exit codes.
			kubectlutil.CheckErr(err)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown component %q: want etcd, kube-apiserver or kubectl\n", os.Args[1])
		os.Exit(2)
	}
}
